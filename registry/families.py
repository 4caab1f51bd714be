"""Model families, defined once (see DESIGN.md).

Each family is one :class:`FamilySpec` in :data:`FAMILIES`: its registered-name rule, the
dotted path of its runtime class and the bentos that bake its promoted versions. The
:class:`Family` enum, name checks and their error messages, runtime lookup and the
``tradeserve build`` targets are all derived from that table, so adding a family means one
entry here, one package in ``training_hooks/`` and one in ``bentos/`` (README: "Adding a
family"). Runtime classes are named by path and imported lazily: the registry core never
imports ``training_hooks`` or ``bentos`` by module name.

A tag-only family (``tabular``: XGBoost and scikit-learn models under names of their users'
choosing) is recognised by the ``family`` tag alone; its name rule only keeps the names the
other families claim out of it, so no name is ever ambiguous.
"""

from __future__ import annotations

import importlib
import re
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from registry.errors import InvalidModelNameError

if TYPE_CHECKING:
    from registry.runtime import FamilyRuntime

SPECIALIST_ROLES = ("bull", "bear", "sideways", "universal")
REGIME_DETECTOR_NAME = "regime-detector"


class FamilySpec(BaseModel):
    """Everything tradeserve needs to know about one model family."""

    model_config = ConfigDict(frozen=True)

    value: str = Field(description="The family's name: the `family` tag of its models")
    pattern: str = Field(description="Regular expression every registered name must match")
    name_rule: str = Field(description="The naming rule as people read it, for error messages")
    runtime: str = Field(description="'module:Class' of its runtime (registry.runtime protocol)")
    bentos: tuple[str, ...] = Field(
        description="`tradeserve build` targets (bentos/<target>/) that bake its promoted versions"
    )
    required: bool = Field(
        default=True, description="Whether those bentos need at least one promoted version"
    )
    tag_only: bool = Field(
        default=False,
        description="Its models are known by their `family` tag alone: no name implies it, and "
        "its pattern admits only names that no other family claims",
    )

    @property
    def member(self) -> str:
        """Its :class:`Family` member name (``venue-quantiles`` -> ``VENUE_QUANTILES``)."""
        return self.value.upper().replace("-", "_")

    @property
    def package(self) -> str:
        """Its package under ``training_hooks/`` and the prefix of its settings."""
        return self.value.replace("-", "_")


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec(
        value="chronos",
        pattern=r"chronos-(t5-(tiny|mini|small|base|large)|bolt-(tiny|mini|small|base)|2)",
        name_rule="chronos-t5-<tiny|mini|small|base|large>, chronos-bolt-<tiny|mini|small|base> "
        "or chronos-2",
        runtime="training_hooks.chronos.runtime:ChronosRuntime",
        bentos=("chronos",),
    ),
    FamilySpec(
        value="factor",
        pattern=r"factor-[A-Za-z0-9][A-Za-z0-9_.-]*",
        name_rule="factor-<group>",
        runtime="training_hooks.factor.runtime:FactorRuntime",
        bentos=("factor",),
    ),
    FamilySpec(
        value="specialist",
        pattern=rf"specialist-({'|'.join(SPECIALIST_ROLES)})",
        name_rule=f"specialist-<{'|'.join(SPECIALIST_ROLES)}>",
        runtime="training_hooks.specialist.runtime:SpecialistRuntime",
        bentos=("specialists", "regime_blend"),
    ),
    FamilySpec(
        value="regime",
        pattern=re.escape(REGIME_DETECTOR_NAME),
        name_rule=REGIME_DETECTOR_NAME,
        runtime="training_hooks.regime.runtime:RegimeRuntime",
        bentos=("regime_blend",),
    ),
    FamilySpec(
        value="venue-quantiles",
        pattern=r"venue-quantiles-[a-z0-9][a-z0-9-]*",
        name_rule="venue-quantiles-<venue>",
        runtime="training_hooks.venue_quantiles.runtime:VenueQuantilesRuntime",
        bentos=("factor",),
        required=False,
    ),
    FamilySpec(
        value="tabular",
        pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
        name_rule="any name no other family claims (letters, digits, '_', '.', '-'), tagged "
        "family=tabular",
        runtime="training_hooks.tabular.runtime:TabularRuntime",
        bentos=("factor",),
        required=False,
        tag_only=True,
    ),
)

Family = StrEnum("Family", {spec.member: spec.value for spec in FAMILIES})  # type: ignore[misc]
Family.__doc__ = "The model families of :data:`FAMILIES`."

_SPECS: dict[str, FamilySpec] = {spec.value: spec for spec in FAMILIES}
_NAMED = [spec for spec in FAMILIES if not spec.tag_only]
_CLAIMED = "|".join(f"(?:{spec.pattern})" for spec in _NAMED)
_PATTERNS: dict[str, re.Pattern[str]] = {
    spec.value: re.compile(
        rf"^(?!(?:{_CLAIMED})$)(?:{spec.pattern})$" if spec.tag_only else rf"^(?:{spec.pattern})$"
    )
    for spec in FAMILIES
}


def family_spec(family: Family | str) -> FamilySpec:
    """The table entry of ``family``."""
    return _SPECS[Family(family).value]


def family_of(name: str) -> Family:
    """The family a registered-model name belongs to, by its naming rule (families known by
    their tag alone are never inferred from a name)."""
    for spec in _NAMED:
        if _PATTERNS[spec.value].match(name):
            return Family(spec.value)
    rules = ", ".join(spec.name_rule for spec in _NAMED)
    tagged = ", ".join(spec.value for spec in FAMILIES if spec.tag_only)
    raise InvalidModelNameError(
        f"'{name}' matches no model family; expected one of: {rules} "
        f"(or a {tagged} model, known by its `family` tag)"
    )


def check_name(name: str, family: Family) -> None:
    """Raise unless ``name`` follows the naming rule of ``family``."""
    if not _PATTERNS[family.value].match(name):
        raise InvalidModelNameError(
            f"'{name}' is not a valid {family.value} model name "
            f"(expected {family_spec(family).name_rule})"
        )


@cache
def runtime_class(family: Family | str) -> type[FamilyRuntime]:
    """The runtime class of ``family``, imported on first use (one family never imports
    another's code)."""
    module_name, class_name = family_spec(family).runtime.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def specialist_name(role: str) -> str:
    if role not in SPECIALIST_ROLES:
        raise InvalidModelNameError(
            f"unknown specialist '{role}'; expected one of {', '.join(SPECIALIST_ROLES)}"
        )
    return f"specialist-{role}"


def venue_quantiles_name(venue: str) -> str:
    name = f"venue-quantiles-{venue}"
    check_name(name, Family.VENUE_QUANTILES)
    return name
