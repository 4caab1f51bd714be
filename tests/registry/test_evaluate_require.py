"""`tradeserve evaluate` logs its walk-forward results on the models it evaluated (MLflow 3
logged-model metrics, the equity figure and the trade table on its run), and
`tradeserve promote --require` gates a candidate on them: it passes below the logged Sharpe
and refuses above it (or when the metric is missing) without moving the alias.

Runs on a copy of the demo registry's database (artifacts and market data are shared, read
only), so the promotions made here leave the session's demo registry as it was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from registry.audit import AUDIT_PREFIX
from registry.model_metrics import logged_model_id
from tests.conftest import clear_mlflow_uris
from tests.demo_fixtures import TRADESERVE, demo_env

CANDIDATE = "specialist-bull"


@pytest.fixture
def home(demo_home: Path, tmp_path: Path) -> Path:
    """A TRADESERVE_HOME whose registry is a copy of the demo's."""
    own = tmp_path / "home"
    own.mkdir()
    shutil.copyfile(demo_home / "mlflow.db", own / "mlflow.db")
    (own / "market_data").symlink_to(demo_home / "market_data", target_is_directory=True)
    return own


def tradeserve(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRADESERVE), *args],
        env=demo_env(home),
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def client(home: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client of the copy. MLflow's SQL registry looks a new version's logged model up
    through the global tracking URI, so that is set too (and restored afterwards)."""
    uri = f"sqlite:///{home / 'mlflow.db'}"
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_candidate(client: MlflowClient) -> str:
    """A new, not yet validated version of the candidate (the champion's logged model)."""
    champion = client.get_model_version_by_alias(CANDIDATE, "champion")
    tags = {
        key: value
        for key, value in champion.tags.items()
        if not key.startswith(AUDIT_PREFIX) and not key.startswith("validation_")
    }
    created = client.create_model_version(
        CANDIDATE,
        champion.source,
        run_id=champion.run_id,
        tags={**tags, "validation_status": "pending"},
    )
    return str(created.version)


def champion(client: MlflowClient) -> str:
    return str(client.get_registered_model(CANDIDATE).aliases["champion"])


def test_evaluate_then_promote_require_gates_on_the_logged_sharpe(
    home: Path, client: MlflowClient
) -> None:
    before = champion(client)
    candidate = register_candidate(client)
    done = tradeserve(
        home,
        "evaluate",
        "--start",
        "2016-01-01",
        "--end",
        "2016-12-31",
        "--model",
        f"{CANDIDATE}={candidate}",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    run_id = report["run_id"]
    assert report["models"][CANDIDATE] == candidate

    for name, version in report["models"].items():  # on every evaluated version's model
        model_id = logged_model_id(client.get_model_version(name, version))
        assert model_id is not None, name
        logged = {
            m.key: m.value for m in client.get_logged_model(model_id).metrics if m.run_id == run_id
        }
        assert logged["sharpe"] == pytest.approx(report["metrics"]["mixture"]["sharpe"])
        assert logged["buy_and_hold_sharpe"] == pytest.approx(
            report["metrics"]["buy_and_hold"]["sharpe"]
        )
    version = client.get_model_version(CANDIDATE, candidate)
    metrics = {
        m.key: m.value
        for m in client.get_logged_model(logged_model_id(version)).metrics
        if m.run_id == run_id
    }
    sharpe = metrics["sharpe"]  # read back, as a user would from the UI
    assert f"| sharpe | {sharpe:.6g} | run 1 |" in (version.description or "")
    assert f"runs/{run_id})" in version.description and "equity_curve.png" in version.description

    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"equity_curve.png", "trades.json"} <= artifacts
    png = Path(client.download_artifacts(run_id, "equity_curve.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trades = json.loads(Path(client.download_artifacts(run_id, "trades.json")).read_text())
    rows = [dict(zip(trades["columns"], row, strict=True)) for row in trades["data"]]
    assert len(rows) == sum(report["metrics"][mode]["trades"] for mode in ("argmax", "mixture"))
    assert all(row["traded"] > 0 and row["action"] in ("BUY", "SELL") for row in rows)

    refused = tradeserve(
        home, "promote", CANDIDATE, candidate, "--require", f"sharpe>={sharpe + 0.01}", "--json"
    )
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.strip().splitlines()
    assert (
        f"sharpe={sharpe:g} fails sharpe>=" in line and f"champion stays version {before}" in line
    )
    missing = tradeserve(home, "promote", CANDIDATE, candidate, "--require", "alpha>0")
    assert missing.returncode == 1 and "metric 'alpha' was not logged" in missing.stderr
    assert champion(client) == before  # a refusal moves nothing
    assert client.get_model_version(CANDIDATE, candidate).tags["validation_status"] == "pending"

    passed = tradeserve(
        home,
        "promote",
        CANDIDATE,
        candidate,
        "--require",
        f"sharpe>={sharpe - 0.01}",
        "--require",
        f"max_drawdown<={metrics['max_drawdown'] + 0.01}",
        "--reason",
        "walk-forward 2016",
        "--json",
    )
    assert passed.returncode == 0, passed.stderr
    result = json.loads(passed.stdout)
    assert (result["from_version"], result["to_version"], result["changed"]) == (
        before,
        candidate,
        True,
    )
    assert "metric thresholds" in result["report"]["checks"]
    assert champion(client) == candidate
    history = json.loads(tradeserve(home, "history", CANDIDATE, "--json").stdout)
    assert [(e["to_version"], e["passed"]) for e in history[-3:]] == [
        (candidate, False),
        (candidate, False),
        (candidate, True),
    ]
