"""Regime fitting: a 3-state, full-covariance Gaussian HMM fitted offline with hmmlearn.

The HMM is fitted on the standardized regime features
(:data:`~training_hooks.features.REGIME_FEATURE_NAMES`) of the training window of every
symbol; its states are then ordered by the labelling rule of
:mod:`training_hooks.regime.runtime` (:func:`label_states`) and stored as plain JSON
parameters the runtime filters with. Metrics come from that same causal filter.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from registry.families import REGIME_DETECTOR_NAME
from training_hooks.features import REGIME_FEATURE_NAMES, compute_features, min_history
from training_hooks.market_data import DEMO_SPLITS, InsufficientHistoryError, data_window
from training_hooks.regime.runtime import (
    REGIME_LABELS,
    RegimeModelError,
    RegimeParams,
    RegimeRuntime,
    save_params,
)


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
