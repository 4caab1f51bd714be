"""Market-regime detector: a Gaussian HMM fitted offline, forward-filtered online.

Fitting uses hmmlearn (3 states, full covariances) on the standardized regime features
(:data:`~training_hooks.features.REGIME_FEATURE_NAMES`) of the training window of every
symbol. Serving never calls hmmlearn: :class:`RegimeRuntime` runs the causal forward filter
in numpy from ``startprob``, ``transmat``, ``means`` and ``covars`` stored as JSON, so the
probabilities at bar ``t`` depend only on bars up to ``t`` (hmmlearn's ``predict`` and
``predict_proba`` smooth over the whole sequence and would look ahead).

Labelling rule: each state's daily-return Sharpe ratio is its mean ``ret_1`` divided by its
``ret_1`` standard deviation (both de-standardized). The state with the highest ratio is
``bull``, the lowest ``bear`` and the remaining one ``sideways``. On the demo data this gives
bull = calm and rising, bear = high volatility and falling, sideways = in between.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import TradeserveError
from registry.families import REGIME_DETECTOR_NAME, Family
from training_hooks.features import (
    REGIME_FEATURE_NAMES,
    REGIME_FEATURE_SPEC,
    FeatureSpec,
    compute_features,
    min_history,
)
from training_hooks.market_data import (
    DEMO_SOURCES,
    DEMO_SPLITS,
    InsufficientHistoryError,
    data_window,
    normalize_bars,
)
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model, requirements

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


def normalized_entropy(p: np.ndarray | Sequence[float]) -> np.ndarray | float:
    """Entropy divided by ln K, in [0, 1] (K = number of states)."""
    probs = np.asarray(p, dtype=np.float64)
    k = probs.shape[-1]
    if k < 2:
        return 0.0 if probs.ndim == 1 else np.zeros(probs.shape[:-1])
    return entropy_nats(probs) / math.log(k)


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


# --- fitting ------------------------------------------------------------------------------


class RegimeFit(BaseModel):
    """A fitted detector: its artifact folder, parameters and training metrics."""

    artifact_dir: Path
    params: RegimeParams
    metrics: dict[str, float]
    symbols: tuple[str, ...]
    data_start: date
    data_end: date


def _training_matrices(
    market: Mapping[str, pd.DataFrame], end: date
) -> tuple[list[np.ndarray], list[str]]:
    matrices, symbols = [], []
    for symbol, bars in market.items():
        features = compute_features(bars, REGIME_FEATURE_NAMES)
        rows = DEMO_SPLITS.model_copy(update={"train_end": end}).split(features)["train"]
        if len(rows) > 10:
            matrices.append(rows.to_numpy())
            symbols.append(symbol)
    if not matrices:
        raise InsufficientHistoryError(min_history(REGIME_FEATURE_NAMES) + 10, 0, "regime fit")
    return matrices, symbols


def _fit_hmm(z: np.ndarray, lengths: list[int], n_restarts: int, seed: int) -> Any:
    from hmmlearn.hmm import GaussianHMM
    from threadpoolctl import threadpool_limits

    best, best_score = None, -np.inf
    for restart in range(n_restarts):
        model = GaussianHMM(
            n_components=len(REGIME_LABELS),
            covariance_type="full",
            n_iter=200,
            tol=1e-4,
            random_state=seed + restart,
        )
        # 2×2 covariances: BLAS threads only add contention (10× slower on busy hosts).
        with threadpool_limits(limits=1):
            model.fit(z, lengths)
            score = model.score(z, lengths)
        if np.isfinite(score) and score > best_score:
            best, best_score = model, score
    if best is None:
        raise RegimeModelError("HMM fitting failed for every restart")
    return best


def label_states(
    means: np.ndarray, covars: np.ndarray, scaler_mean: np.ndarray, scaler_scale: np.ndarray
) -> list[int]:
    """State indices in :data:`REGIME_LABELS` order by the documented Sharpe rule.

    ``means``/``covars`` are standardized with ``scaler_mean``/``scaler_scale``; feature 0
    must be the daily log return.
    """
    mean_return = means[:, 0] * scaler_scale[0] + scaler_mean[0]
    return_sd = np.sqrt(covars[:, 0, 0]) * scaler_scale[0]
    order = list(np.argsort(mean_return / return_sd))  # ascending Sharpe
    bear, bull = order[0], order[-1]
    sideways = next(i for i in range(len(means)) if i not in (bear, bull))
    return [int(bull), int(bear), int(sideways)]


def fit_regime_detector(
    market: Mapping[str, pd.DataFrame],
    train_end: date = DEMO_SPLITS.train_end,
    out_dir: Path | None = None,
    *,
    n_restarts: int = 3,
    seed: int = 0,
) -> RegimeFit:
    """Fit the 3-state HMM on bars up to ``train_end`` of every symbol; write the artifact
    to ``out_dir`` (a new temporary folder by default)."""
    if REGIME_FEATURE_NAMES[0] != "ret_1":
        raise RegimeModelError("the labelling rule needs ret_1 as the first regime feature")
    matrices, symbols = _training_matrices(market, train_end)
    stacked = np.concatenate(matrices)
    mean, scale = stacked.mean(axis=0), stacked.std(axis=0)
    z = (stacked - mean) / scale
    model = _fit_hmm(z, [len(m) for m in matrices], n_restarts, seed)
    order = label_states(model.means_, model.covars_, mean, scale)
    start, end = data_window({s: market[s] for s in symbols}, train_end)
    params = RegimeParams(
        scaler_mean=mean.tolist(),
        scaler_scale=scale.tolist(),
        startprob=model.startprob_[order].tolist(),
        transmat=model.transmat_[np.ix_(order, order)].tolist(),
        means=model.means_[order].tolist(),
        covars=model.covars_[order].tolist(),
        train_start=start,
        train_end=end,
    )
    artifact_dir = Path(out_dir or tempfile.mkdtemp(prefix=f"{REGIME_DETECTOR_NAME}-"))
    save_params(params, artifact_dir)
    runtime = RegimeRuntime(params)
    metrics = regime_metrics(runtime, market, train_end)
    return RegimeFit(
        artifact_dir=artifact_dir,
        params=params,
        metrics=metrics,
        symbols=tuple(symbols),
        data_start=start,
        data_end=end,
    )


def regime_metrics(
    runtime: RegimeRuntime, market: Mapping[str, pd.DataFrame], train_end: date
) -> dict[str, float]:
    """Log-likelihood per bar (train and validation), state statistics and durations."""
    splits = DEMO_SPLITS.model_copy(update={"train_end": train_end})
    evidence: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
    argmax_train: list[np.ndarray] = []
    for bars in market.values():
        features = runtime.regime_features(bars)
        alpha, log_evidence = runtime.forward(runtime.standardize(features.to_numpy()))
        frame = pd.DataFrame({"ll": log_evidence, "state": alpha.argmax(axis=1)}, features.index)
        parts = splits.split(frame)
        for split in evidence:
            evidence[split].append(parts[split]["ll"].to_numpy())
        argmax_train.append(parts["train"]["state"].to_numpy())
    metrics = {
        f"{split}_loglik_per_bar": float(np.concatenate(values).mean())
        for split, values in evidence.items()
        if sum(len(v) for v in values)
    }
    metrics["train_bars"] = float(sum(len(v) for v in evidence["train"]))
    metrics.update(_state_statistics(runtime, argmax_train))
    return metrics


def _state_statistics(runtime: RegimeRuntime, argmax: list[np.ndarray]) -> dict[str, float]:
    params = runtime.params
    scale, mean = np.asarray(params.scaler_scale), np.asarray(params.scaler_mean)
    means = np.asarray(params.means) * scale + mean
    covars = np.asarray(params.covars)
    transmat = np.asarray(params.transmat)
    states = np.concatenate(argmax)
    stats: dict[str, float] = {}
    for k, label in enumerate(runtime.labels):
        for j, name in enumerate(runtime.feature_names):
            stats[f"{label}_mean_{name}"] = float(means[k, j])
        ret_sd = math.sqrt(covars[k, 0, 0]) * scale[0]
        stats[f"{label}_mean_return_annualized"] = float(means[k, 0] * 252)
        stats[f"{label}_return_vol_annualized"] = float(ret_sd * math.sqrt(252))
        stats[f"{label}_expected_duration_bars"] = float(1.0 / max(1e-12, 1.0 - transmat[k, k]))
        stats[f"{label}_occupancy"] = float((states == k).mean())
        stats[f"{label}_avg_filtered_run_bars"] = _average_run(argmax, k)
    return stats


def _average_run(sequences: list[np.ndarray], state: int) -> float:
    """Mean length of consecutive runs of ``state`` in filtered argmax sequences."""
    runs: list[int] = []
    for seq in sequences:
        is_state = np.concatenate([[False], seq == state, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(is_state))
        runs.extend((edges[1::2] - edges[0::2]).tolist())
    return float(np.mean(runs)) if runs else 0.0


# --- logging ------------------------------------------------------------------------------


def regime_input_example(bars: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
    """The last ``min_history + n_rows - 1`` bars as a frame with a ``date`` column."""
    needed = min_history(REGIME_FEATURE_NAMES) + n_rows - 1
    return bars.iloc[-needed:].reset_index()


def log_regime_detector(
    fit: RegimeFit,
    market: Mapping[str, pd.DataFrame],
    *,
    data_source: str | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log ``fit`` as a new version of ``regime-detector`` with metrics and lineage."""
    first = market[fit.symbols[0]]
    example = regime_input_example(first.loc[: pd.Timestamp(fit.data_end)])
    source = data_source or "+".join(DEMO_SOURCES.get(s, s) for s in fit.symbols)
    lineage = Lineage(
        data_source=source,
        data_window_start=fit.data_start,
        data_window_end=fit.data_end,
        extra={"symbols": ",".join(fit.symbols), "labelling_rule": LABELLING_RULE},
    )
    return log_pyfunc_model(
        name=REGIME_DETECTOR_NAME,
        family=Family.REGIME,
        artifact_dir=fit.artifact_dir,
        model_config={"params_file": PARAMS_FILE},
        input_example=example,
        lineage=lineage,
        metrics=fit.metrics,
        metadata={
            "feature_spec": fit.params.feature_spec.model_dump(mode="json"),
            "labels": list(fit.params.labels),
        },
        tags={
            "feature_spec_version": fit.params.feature_spec.version,
            "regime_features": ",".join(fit.params.feature_spec.names),
        },
        description=description
        or "3-state Gaussian HMM (hmmlearn fit) run as a causal forward filter",
        pip_requirements=requirements("mlflow", "pandas", "numpy", "pydantic"),
    )


def train_demo_regime(market: Mapping[str, pd.DataFrame], workdir: Path) -> RegisteredVersion:
    """Fit on the demo training window (1999–2012) and register ``regime-detector``."""
    fit = fit_regime_detector(market, DEMO_SPLITS.train_end, Path(workdir) / REGIME_DETECTOR_NAME)
    return log_regime_detector(fit, market)
