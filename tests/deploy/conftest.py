"""Fixtures of the deploy tests: one real ``tradeserve build`` per session.

The bentos are built from the demo-filled registry into the demo home's BentoML store
(``<demo_home>/bentoml``), once, by the real CLI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import bentoml
import numpy as np
import pytest
import yaml

from bentos.build import BuildReport, BuiltBento
from harness.ports import free_port
from registry.loading import load_version
from registry.resolve import resolve
from tests.demo_fixtures import TRADESERVE, demo_env


def unreachable_registry() -> str:
    """An MLflow tracking URI where nothing listens (the registry is down)."""
    return f"http://127.0.0.1:{free_port()}"


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a bento server that must not use the registry: it is unreachable."""
    return demo_env(home, MLFLOW_TRACKING_URI=unreachable_registry(), **extra)


def run_build(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``tradeserve build --json ARGS`` on the registry in ``home``."""
    return subprocess.run(
        [str(TRADESERVE), "build", "--json", *args],
        env=demo_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def build_report(demo_home: Path) -> BuildReport:
    """Every bento ``tradeserve build`` makes from the demo registry (built once)."""
    result = run_build(demo_home)
    assert result.returncode == 0, f"tradeserve build failed:\n{result.stdout}\n{result.stderr}"
    return BuildReport.model_validate_json(result.stdout)


@pytest.fixture(scope="session")
def built(build_report: BuildReport) -> dict[str, BuiltBento]:
    """The built bentos by target (chronos, factor, specialists, regime_blend, model_manager)."""
    return {bento.target: bento for bento in build_report.bentos}


def bento_info(bento: BuiltBento) -> dict:
    """The bento's ``bento.yaml``."""
    return yaml.safe_load((Path(bento.path) / "bento.yaml").read_text())


def check_baked_factor_models(client: bentoml.SyncHTTPClient, baked: dict[str, str]) -> None:
    """Every factor model of a bento answers ``/predict`` with the version baked in and the
    predictions of that version loaded in-process."""
    factor_names = [name for name in baked if name.startswith("factor-")]
    assert factor_names
    for name in factor_names:
        runtime = load_version(resolve(name)).runtime
        rows = np.random.default_rng(7).normal(scale=0.02, size=(4, len(runtime.factors)))
        rows = rows.astype(np.float32)
        body = client.predict(model=name, rows=rows.tolist())
        assert body["model"] == {"name": name, "version": baked[name], "alias": "champion"}
        np.testing.assert_allclose(body["predictions"], runtime.predict_rows(rows), rtol=1e-6)
