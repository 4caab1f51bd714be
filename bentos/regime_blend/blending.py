"""Strategy weights from regime probabilities, and blending of specialist action probabilities.

* ``argmax`` — the seed's hard switch: weights ``w_k = (p_k + 0.1) / 1.3`` (the default
  mapping), the specialist with the largest weight acts alone, its greedy action and that
  action's probability are the decision.
* ``mixture`` — mixture of experts: ``pi_mix(a) = sum_k w_k pi_k(a)``, greedy action of
  ``pi_mix`` and its probability.

A specialist that is not served is replaced by ``universal`` (then by any served one); the
plan says which replaced which so responses can report it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import TradeserveError
from registry.families import SPECIALIST_ROLES
from training_hooks.regime.runtime import REGIME_LABELS
from training_hooks.specialist.runtime import ACTIONS

FALLBACK_ROLE = "universal"


class NoSpecialistError(TradeserveError):
    """No specialist is served at all."""

    http_status = 503


class UnknownOverrideError(TradeserveError):
    """``strategy_override`` names a specialist that is unknown or not served (seed text)."""

    def __init__(self, requested: str) -> None:
        super().__init__(f"Strategy override '{requested}' not available")


class WeightMapping(BaseModel):
    """``w_s ∝ floor + sum_r coefficients[s][r] · p_r``, normalised to sum to 1.

    The default (identity over bull/bear/sideways, floor 0.1) is the seed's meta-controller
    fallback ``(p + 0.1) / 1.3``.
    """

    model_config = ConfigDict(frozen=True)

    coefficients: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {role: {role: 1.0} for role in REGIME_LABELS},
        description="specialist role -> {regime label: coefficient}",
    )
    floor: float = Field(default=0.1, ge=0, description="added to every specialist's weight")

    @model_validator(mode="after")
    def _check(self) -> WeightMapping:
        if not self.coefficients:
            raise ValueError("the weight mapping needs at least one specialist")
        for role, row in self.coefficients.items():
            if role not in SPECIALIST_ROLES:
                raise ValueError(f"unknown specialist '{role}' in the weight mapping")
            unknown = set(row) - set(REGIME_LABELS)
            if unknown:
                raise ValueError(f"unknown regime(s) {sorted(unknown)} for specialist '{role}'")
            if any(value < 0 for value in row.values()):
                raise ValueError(f"negative coefficient for specialist '{role}'")
        if self.floor == 0 and not self.matrix.sum(axis=1).all():
            raise ValueError("every regime must give weight to some specialist when floor = 0")
        return self

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.coefficients)

    @functools.cached_property
    def matrix(self) -> np.ndarray:
        """Coefficients as ``[regime, specialist]`` in REGIME_LABELS × roles order (built
        once: every decision multiplies by it; read-only)."""
        matrix = np.array(
            [
                [self.coefficients[role].get(label, 0.0) for role in self.roles]
                for label in REGIME_LABELS
            ]
        )
        matrix.setflags(write=False)
        return matrix

    def weights(self, regime: np.ndarray) -> np.ndarray:
        """Strategy weights ``[..., S]`` for regime probabilities ``[..., 3]``."""
        raw = np.asarray(regime, dtype=np.float64) @ self.matrix + self.floor
        return raw / raw.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class RolePlan:
    """Which served specialist answers for each role a decision needs."""

    used: dict[str, str]  # requested role -> served role
    override: str | None = None
    needed: tuple[str, ...] = field(default=())

    @property
    def fallbacks(self) -> dict[str, str]:
        return {role: used for role, used in self.used.items() if role != used}


def _stand_in(role: str, served: Collection[str]) -> str:
    if role in served:
        return role
    if FALLBACK_ROLE in served:
        return FALLBACK_ROLE
    for candidate in SPECIALIST_ROLES:
        if candidate in served:
            return candidate
    raise NoSpecialistError("no specialist is served; check the Specialists service")


def plan_roles(
    mapping: WeightMapping, served: Collection[str], override: str | None = None
) -> RolePlan:
    """Roles to call for a decision; an override must itself be served (no fallback)."""
    used = {role: _stand_in(role, served) for role in mapping.roles}
    if override is not None:
        if override not in served:
            raise UnknownOverrideError(override)
        used[override] = override
    needed = tuple(dict.fromkeys(used.values()))
    return RolePlan(used=used, override=override, needed=needed)


@dataclass(frozen=True)
class Blend:
    """The distribution a decision's action was taken from, and how it was formed."""

    action: str
    confidence: float
    distribution: np.ndarray  # over ACTIONS
    chosen_role: str | None  # argmax / override: the role that acted alone


def _greedy(distribution: np.ndarray, chosen_role: str | None) -> Blend:
    index = int(np.argmax(distribution))
    return Blend(ACTIONS[index], float(distribution[index]), distribution, chosen_role)


def blend(
    mode: str,
    weights: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    plan: RolePlan,
    roles: tuple[str, ...],
) -> Blend:
    """Blend the served specialists' action probabilities (keyed by served role)."""
    if plan.override is not None:
        return _greedy(np.asarray(probabilities[plan.override], dtype=np.float64), plan.override)
    stacked = np.stack([np.asarray(probabilities[plan.used[role]], np.float64) for role in roles])
    if mode == "argmax":
        chosen = roles[int(np.argmax(weights))]
        return _greedy(stacked[roles.index(chosen)], chosen)
    if mode == "mixture":
        return _greedy(weights @ stacked, None)
    raise TradeserveError(f"unknown blend_mode '{mode}'; use argmax or mixture")
