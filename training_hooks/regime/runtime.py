"""Regime runtime: a 3-state Gaussian HMM run as a causal forward filter.

:class:`RegimeRuntime` filters in numpy from ``startprob``, ``transmat``, ``means`` and
``covars`` stored as JSON (``regime.json``), so the probabilities at bar ``t`` depend only on
bars up to ``t`` (hmmlearn's ``predict`` and ``predict_proba`` smooth over the whole sequence
and would look ahead). Fitting (hmmlearn) lives in :mod:`training_hooks.regime.train`; serving
never imports it.

Labelling rule: each state's daily-return Sharpe ratio is its mean ``ret_1`` divided by its
``ret_1`` standard deviation (both de-standardized). The state with the highest ratio is
``bull``, the lowest ``bear`` and the remaining one ``sideways``. On the demo data this gives
bull = calm and rising, bear = high volatility and falling, sideways = in between.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import TradeserveError
from registry.families import Family
from training_hooks.features import (
    REGIME_FEATURE_NAMES,
    REGIME_FEATURE_SPEC,
    FeatureSpec,
    compute_features,
    min_history,
)
from training_hooks.market_data import InsufficientHistoryError, normalize_bars

REGIME_LABELS: tuple[str, ...] = ("bull", "bear", "sideways")
PARAMS_FILE = "regime.json"
# Bars a service needs to pass to latest_probabilities: on the demo data a filter started
# 100+ bars back already equals the full-history filter to 1e-12 (tests check 500).
REGIME_LOOKBACK = 500
LABELLING_RULE = (
    "state Sharpe = mean(ret_1) / std(ret_1) per state; highest = bull, lowest = bear, "
    "remaining = sideways"
)
_LOG_2PI = math.log(2.0 * math.pi)


class RegimeModelError(TradeserveError):
    """A regime-detector artifact is missing, malformed or numerically invalid."""


class RegimeParams(BaseModel):
    """Everything the online filter needs; stored as ``regime.json``. States are in
    :data:`REGIME_LABELS` order."""

    model_config = ConfigDict(frozen=True)

    format_version: int = 1
    labels: tuple[str, ...] = REGIME_LABELS
    feature_spec: FeatureSpec = REGIME_FEATURE_SPEC
    scaler_mean: list[float] = Field(description="Feature means used for standardization")
    scaler_scale: list[float] = Field(description="Feature std devs used for standardization")
    startprob: list[float]
    transmat: list[list[float]]
    means: list[list[float]] = Field(description="State means in standardized units")
    covars: list[list[list[float]]] = Field(description="Full state covariances, standardized")
    labelling_rule: str = LABELLING_RULE
    train_start: date | None = None
    train_end: date | None = None


def entropy_nats(p: np.ndarray | Sequence[float]) -> np.ndarray | float:
    """Shannon entropy −Σ p ln p along the last axis (0 ln 0 = 0), in nats."""
    probs = np.asarray(p, dtype=np.float64)
    terms = np.where(probs > 0, -probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
    result = terms.sum(axis=-1)
    return float(result) if result.ndim == 0 else result


def normalized_entropy(
    p: np.ndarray | Sequence[float], nats: np.ndarray | float | None = None
) -> np.ndarray | float:
    """Entropy divided by ln K, in [0, 1] (K = number of states); ``nats``: the entropy of
    ``p`` when the caller has it already."""
    probs = np.asarray(p, dtype=np.float64)
    k = probs.shape[-1]
    if k < 2:
        return 0.0 if probs.ndim == 1 else np.zeros(probs.shape[:-1])
    return (entropy_nats(probs) if nats is None else nats) / math.log(k)


class RegimeRuntime:
    """Causal HMM forward filter over bars; the ``regime`` family runtime."""

    family: ClassVar[Family] = Family.REGIME

    def __init__(self, params: RegimeParams) -> None:
        params.feature_spec.require_current()
        self.params = params
        self.labels = tuple(params.labels)
        self.feature_names = tuple(params.feature_spec.names)
        self.min_history = min_history(self.feature_names)
        self._mean = np.asarray(params.scaler_mean, dtype=np.float64)
        self._scale = np.asarray(params.scaler_scale, dtype=np.float64)
        self._startprob = np.asarray(params.startprob, dtype=np.float64)
        self._transmat = np.asarray(params.transmat, dtype=np.float64)
        self._means = np.asarray(params.means, dtype=np.float64)
        covars = np.asarray(params.covars, dtype=np.float64)
        self._check_shapes(covars)
        try:
            chol = np.linalg.cholesky(covars)
        except np.linalg.LinAlgError as error:
            raise RegimeModelError("regime covariances are not positive definite") from error
        self._chol_inv = np.linalg.inv(chol)
        self._log_norm = -0.5 * (
            len(self.feature_names) * _LOG_2PI
            + 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        )

    def _check_shapes(self, covars: np.ndarray) -> None:
        k, d = len(self.labels), len(self.feature_names)
        problems = []
        if sorted(self.labels) != sorted(REGIME_LABELS):
            problems.append(f"labels must be {', '.join(REGIME_LABELS)}")
        if self._startprob.shape != (k,) or not np.isclose(self._startprob.sum(), 1.0):
            problems.append("startprob must be K probabilities summing to 1")
        if self._transmat.shape != (k, k) or not np.allclose(self._transmat.sum(axis=1), 1.0):
            problems.append("transmat must be K×K with rows summing to 1")
        if self._means.shape != (k, d) or self._mean.shape != (d,) or self._scale.shape != (d,):
            problems.append(f"means/scaler must match {k} states × {d} features")
        if covars.shape != (k, d, d):
            problems.append(f"covars must be {k} full {d}×{d} matrices")
        if (self._scale <= 0).any():
            problems.append("scaler scale must be positive")
        if problems:
            raise RegimeModelError("invalid regime parameters: " + "; ".join(problems))

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Read ``regime.json`` (or ``config["params_file"]``) from ``artifact_dir``."""
        path = Path(artifact_dir) / str(config.get("params_file", PARAMS_FILE))
        if not path.is_file():
            raise RegimeModelError(f"regime parameters not found: {path}")
        try:
            params = RegimeParams.model_validate_json(path.read_text())
        except ValueError as error:
            raise RegimeModelError(
                f"{path} is not a valid regime parameter file: {error}"
            ) from error
        return cls(params)

    def save(self, artifact_dir: Path) -> Path:
        """Write the parameters as JSON into ``artifact_dir``."""
        return save_params(self.params, artifact_dir)

    # --- numerics -----------------------------------------------------------------------

    def standardize(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self._mean) / self._scale

    def emission_log_likelihood(self, z: np.ndarray) -> np.ndarray:
        """``log p(z_t | state)`` for standardized observations, shape ``(T, K)``."""
        diff = z[:, None, :] - self._means[None, :, :]
        solved = np.einsum("kij,tkj->tki", self._chol_inv, diff)
        return self._log_norm[None, :] - 0.5 * (solved**2).sum(axis=2)

    def forward(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filtered posteriors ``p(state_t | z_1..t)`` and ``log p(z_t | z_1..t-1)``.

        The recursion is normalized every step, with emissions scaled by their row maximum,
        so it neither underflows nor needs log-space sums.
        """
        log_lik = self.emission_log_likelihood(z)
        shift = log_lik.max(axis=1)
        scaled = np.exp(log_lik - shift[:, None])
        alpha = np.empty_like(scaled)
        log_evidence = np.empty(len(scaled))
        predicted = self._startprob
        for t in range(len(scaled)):
            joint = predicted * scaled[t]
            total = joint.sum()
            if not total > 0.0:
                raise RegimeModelError(f"forward filter underflow at step {t}")
            alpha[t] = joint / total
            log_evidence[t] = math.log(total) + shift[t]
            predicted = alpha[t] @ self._transmat
        return alpha, log_evidence

    # --- public API ---------------------------------------------------------------------

    def regime_features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Regime features of normalized bars (rows from the first bar with full history)."""
        return compute_features(bars, self.feature_names)

    def filter_probabilities(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Filtered regime probabilities per bar (index ``date``, one column per label).

        The filter starts at the first bar with valid features; row ``t`` uses bars ``≤ t``.
        """
        features = self.regime_features(bars)
        alpha, _ = self.forward(self.standardize(features.to_numpy()))
        return pd.DataFrame(alpha, index=features.index, columns=list(self.labels))

    def latest_probabilities(
        self, bars: pd.DataFrame, lookback: int | None = None
    ) -> dict[str, float]:
        """Regime probabilities at the last bar, filtering over ``bars`` (or only their last
        ``lookback`` bars: the filter forgets its start within ~100 bars, see
        :data:`REGIME_LOOKBACK`)."""
        if lookback is not None:
            bars = bars.iloc[-max(lookback, self.min_history) :]
        if len(bars) < self.min_history:
            raise InsufficientHistoryError(self.min_history, len(bars), "regime probabilities")
        features = compute_features(bars, self.feature_names).to_numpy()
        alpha, _ = self.forward(self.standardize(features))
        return dict(zip(self.labels, alpha[-1].tolist(), strict=True))

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Bars (``date`` column or index + OHLCV) -> ``date, bull, bear, sideways`` per bar."""
        bars = normalize_bars(frame)
        probabilities = self.filter_probabilities(bars)
        return probabilities.reset_index()

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Problems with ``output``: missing columns, values outside [0, 1], rows not summing
        to 1, or a row count that does not match the bars given."""
        missing = [c for c in ("date", *REGIME_LABELS) if c not in output.columns]
        if missing:
            return [f"output lacks column(s) {', '.join(missing)}"]
        problems = []
        values = output[list(REGIME_LABELS)].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            problems.append("regime probabilities contain NaN or inf")
        elif ((values < 0) | (values > 1)).any():
            problems.append("regime probabilities outside [0, 1]")
        elif not np.allclose(values.sum(axis=1), 1.0, atol=1e-6):
            problems.append("regime probabilities do not sum to 1")
        expected = max(0, len(frame) - min_history(REGIME_FEATURE_NAMES) + 1)
        if len(output) != expected:
            problems.append(f"expected {expected} rows for {len(frame)} bars, got {len(output)}")
        return problems


def save_params(params: RegimeParams, artifact_dir: Path) -> Path:
    """Write ``regime.json`` into ``artifact_dir`` (created if needed)."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    path = artifact_dir / PARAMS_FILE
    path.write_text(params.model_dump_json(indent=2))
    return path
