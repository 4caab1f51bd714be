"""What the ModelManager tests serve: model_manager-layout directories and quantile pickles
built from real boosters, in roots the API may read, trusted and untrusted parts, and beyond.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from tests.demo_fixtures import demo_env, own_bentoml_home

FACTORS = ["ofi_10", "spread_bp", "depth_imb", "ret_30s"]
TAUS = [0.12, -0.04, 0.08, 0.01]
BTC, ETH, SOL = "BTCUSDT_mid_chg_1m", "ETHUSDT_mid_chg_1m", "SOLUSDT_mid_chg_1m"
INFO = {"train_samples": 400, "train_window": (1_700_000_000, 1_710_000_000), "train_time": 2.5}
# venue pickles in model_manager's three formats, and two it refuses
PICKLES = {
    "binance.pkl": {"BTCUSDT": {"low": 1e4, "high": 5e4}, "ETHUSDT": {"low": 5e3, "high": 2e4}},
    "bybit_a.pkl": [
        {"symbol": s, "medium_notional_threshold": m, "large_notional_threshold": x}
        for s, m, x in (("BTCUSDT", 1000, 2000), ("ETHUSDT", 500, 900), ("SOLUSDT", 10, 20))
    ],
    "bybit_b.pkl": {"BTCUSDT": {"low": 1500, "high": 2500}, "ETHUSDT": {"low": 600, "high": 950}},
    "gate.pkl": {"BTCUSDT": {"low": 1.0, "high": 2.0}},
    "not_numbers.pkl": {"BTCUSDT": "large"},
    "inverted.pkl": {"BTCUSDT": {"low": 9.0, "high": 1.0}},
}


def train(seed: int, objective: str = "reg:squarederror") -> xgb.Booster:
    """A real booster without feature names, as model_manager's usually are."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(400, len(FACTORS)))
    target = data[:, 0] - 0.5 * data[:, 2] + (1 + seed) * 0.1 * data[:, 1]
    if objective == "binary:logistic":
        target = (target > 0).astype(float)
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed, "objective": objective}
    return xgb.train(params, xgb.DMatrix(data, label=target), 15)


def write_group(folder: Path, group: str, booster: xgb.Booster, *, pickled: bool = False) -> None:
    """One group: factors and the model JSON with an IC table (or only a pickled model)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{group}_factors.txt").write_text("\n".join(FACTORS) + "\n")
    if pickled:
        (folder / f"{group}_model.pkl").write_bytes(pickle.dumps(booster))
        return
    booster.save_model(folder / f"{group}_model.json")
    symbol, _, return_name = group.partition("_")
    ic = {"symbol": symbol, "factor_name": FACTORS, "return_name": return_name, "Kendall_tau": TAUS}
    pd.DataFrame(ic).to_csv(folder / f"{group}_ic.csv", index=False)


def write_pickle(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))


def seed_values(table: dict[str, tuple[float, float]]) -> dict[str, str]:
    """model_manager's Redis values (symbol -> JSON text, byte for byte) of a venue table."""
    return {
        symbol: json.dumps(
            {"symbol": symbol, "medium_notional_threshold": m, "large_notional_threshold": x}
        )
        for symbol, (m, x) in table.items()
    }


@dataclass
class World:
    """Roots the API may read (a trusted part inside), a folder outside them, the registry."""

    roots: Path  # TRADESERVE_MODEL_ROOTS
    trusted: Path  # TRADESERVE_TRUSTED_PICKLE_DIRS, inside the roots
    outside: Path
    home: Path  # TRADESERVE_HOME: the embedded registry and the directory mapping
    boosters: dict[str, xgb.Booster]

    def env(self, logs: Path, **extra: str) -> dict[str, str]:
        """Environment of a process on this registry (servers: their own BentoML home)."""
        return demo_env(self.home, BENTOML_HOME=own_bentoml_home(self.home, logs), **extra)


def build_world(base: Path) -> World:
    """``prod`` (a JSON group with info.pkl, a pickle-only group), ``live`` (watched and
    changed), groups for the CLI, deletion, conflicts and refusals, and the venue pickles."""
    roots, outside = base / "roots", base / "outside"
    trusted = roots / "trusted"
    boosters = {BTC: train(1), ETH: train(2, "binary:logistic"), SOL: train(3)}
    write_group(trusted / "prod", BTC, boosters[BTC])
    write_pickle(trusted / "prod" / f"{BTC}_info.pkl", INFO)
    write_group(trusted / "prod", ETH, boosters[ETH], pickled=True)  # converted on import
    write_group(trusted / "live", SOL, boosters[SOL])
    write_group(trusted / "extra", "XRPUSDT_ret_5m", train(4))
    write_group(trusted / "cli", "ADAUSDT_ret_5m", train(5))
    write_group(trusted / "conflict", BTC, train(10))  # prod's group from another root
    write_group(trusted / "dup", "DOGEUSDT_ret_1m", train(6))
    write_group(trusted / "dup", "DOGEUSDT_ret_5m", train(7))
    (trusted / "empty").mkdir()
    write_group(roots / "untrusted" / "pkl", "LTCUSDT_ret_1m", train(8), pickled=True)
    write_group(outside / "models", "BNBUSDT_ret_1m", train(9))
    (roots / "escape").symlink_to(outside / "models", target_is_directory=True)
    for name, content in PICKLES.items():
        write_pickle(trusted / name, content)
    write_pickle(roots / "untrusted" / "q.pkl", PICKLES["gate.pkl"])
    write_pickle(outside / "q.pkl", PICKLES["gate.pkl"])
    return World(roots, trusted, outside, base / "home", boosters)
