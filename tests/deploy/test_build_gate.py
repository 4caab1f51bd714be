"""`tradeserve build` bakes only versions that passed the promotion gate, unless --force.

The champion here was set directly through MLflow's API (no gate), as a promotion in the
MLflow UI does: the build refuses it in one line naming the model, the version and the way
out; ``--force`` builds it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from bentos.build import BuildReport
from registry.promotion import promote
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris
from tests.deploy.conftest import run_build
from tests.services.test_live_promotion import NAME, _log_version

pytestmark = pytest.mark.slow


@pytest.fixture
def ungated_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A registry (embedded, in the returned home) whose champion skipped the gate."""
    home = tmp_path / "home"
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("TRADESERVE_HOME", str(home))
    get_settings.cache_clear()
    promote(NAME, _log_version(0), reason="through the gate")
    ungated = _log_version(1)
    MlflowClient(get_settings().effective_tracking_uri).set_registered_model_alias(
        NAME, "champion", ungated
    )
    get_settings.cache_clear()
    return home, ungated


def test_build_refuses_an_ungated_champion_unless_forced(ungated_champion) -> None:
    home, ungated = ungated_champion
    refused = run_build(home, "--family", "factor", timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("tradeserve: ")]
    assert line == (
        f"tradeserve: {NAME} version {ungated} (champion) has not passed the promotion gate "
        f"(validation_status: pending); promote a version through it with "
        f"`tradeserve promote {NAME} VERSION`, or pass --force to build it anyway"
    )
    bentos = home / "bentoml" / "bentos"
    assert not bentos.exists() or not any(bentos.iterdir())

    forced = run_build(home, "--family", "factor", "--force")
    assert forced.returncode == 0, forced.stderr
    [bento] = BuildReport.model_validate_json(forced.stdout).bentos
    assert [(m.name, m.version) for m in bento.models] == [(NAME, ungated)]
