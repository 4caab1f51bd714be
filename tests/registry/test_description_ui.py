"""The registry as a UI user sees it: each version's description (family, lineage, metrics,
gate result, who promoted it, when and why) is written at registration and rewritten by the
gate, promotion, requirement refusals and rollback; the real MLflow UI, rendered by a
headless Chromium, shows it on the version page.

Models are cheap but real: venue-quantiles tables logged through their training hook on an
embedded registry (SQLite + local artifacts), which the UI test serves with a real
``mlflow server``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from harness.browser import chromium_binary, page_text
from harness.mlflow_server import mlflow_server
from registry import description, store
from registry.audit import AuditEntry, now
from registry.errors import GateError
from registry.gate import MetricThreshold
from registry.model_metrics import VersionMetric, logged_model_id
from registry.promotion import promote, rollback
from registry.settings import Settings, get_settings
from training_hooks.registration import Lineage, RegisteredVersion
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.runtime import SymbolThresholds, VenueTable

ACTOR = "alice@desk"
VENUE = "ui-venue"
NAME = f"venue-quantiles-{VENUE}"
LINEAGE = Lineage(data_source="synthetic-ticks", extra={"data_digest": "sha256:5f1e9c"})


@pytest.fixture
def registry(embedded_registry: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRADESERVE_ACTOR", ACTOR)
    get_settings.cache_clear()
    return get_settings()


def log_table(medium: float, coverage: float) -> RegisteredVersion:
    table = VenueTable(
        venue=VENUE,
        symbols={
            "BTCUSDT": SymbolThresholds(
                medium_notional_threshold=medium, large_notional_threshold=10 * medium
            )
        },
    )
    return log_venue_quantiles(VENUE, table, lineage=LINEAGE, metrics={"coverage": coverage})


def page(version: str) -> str:
    return store.client().get_model_version(NAME, version).description or ""


def test_the_description_follows_registration_gate_promotions_and_rollback(
    registry: Settings,
) -> None:
    first = log_table(1e4, coverage=0.9)
    text = page(first.version)
    assert text.startswith(f"**{NAME}** version 1 · family `venue-quantiles`")
    assert "#### Gate: pending" in text and "Never promoted." in text
    assert "| data source | synthetic-ticks |" in text
    assert "| data digest | `sha256:5f1e9c` |" in text
    assert "| coverage | 0.9 | training run |" in text
    source = store.client().get_model_version(NAME, first.version).source
    assert f"| source | `{source}` |" in text and "| training run | [" in text

    second = log_table(2e4, coverage=0.95)
    promote(NAME, first.version, reason="first table")
    promote(NAME, second.version, reason="tighter | BTC <size>")
    text = page(first.version)
    assert "#### Gate: passed" in text
    assert f"| promote | champion | none → v1 | {ACTOR} | passed | first table |" in text
    assert (
        f"| replaced (promote) | champion | v1 → v2 | {ACTOR} | passed | "
        "tighter \\| BTC &lt;size> |" in text
    )
    assert f"| promote | champion | v1 → v2 | {ACTOR} | passed |" in page(second.version)

    with pytest.raises(GateError, match="does not meet the promotion requirements"):
        promote(NAME, first.version, thresholds=[MetricThreshold.parse("coverage>=0.95")])
    text = page(first.version)
    assert "#### Gate: passed" in text  # a missed bar is not a broken version
    assert "| refused: coverage=0.9 fails coverage>=0.95 |" in text

    rollback(NAME, reason="v2 misbehaves")
    assert f"| rollback | champion | v2 → v1 | {ACTOR} | passed | v2 misbehaves |" in page("1")
    assert "| replaced (rollback) | champion | v2 → v1 |" in page(second.version)


def test_a_failed_gate_shows_why(registry: Settings) -> None:
    broken = log_table(1e4, coverage=0.9)
    client = store.client()
    model_id = logged_model_id(client.get_model_version(NAME, broken.version))
    assert model_id is not None
    location = Path(unquote(urlparse(client.get_logged_model(model_id).artifact_location).path))
    shutil.rmtree(location / "artifacts")  # the model's files are gone from the store
    with pytest.raises(GateError):
        promote(NAME, broken.version, reason="try it")
    text = page(broken.version)
    assert "#### Gate: failed" in text
    reason = client.get_model_version(NAME, broken.version).tags["validation_error"]
    assert f"Reason: {reason}" in text and reason.startswith("cannot load")
    assert f"| promote | champion | none → v1 | {ACTOR} | refused: cannot load" in text


def test_metrics_logged_on_the_model_later_are_listed_first_with_their_run(
    registry: Settings,
) -> None:
    version = log_table(1e4, coverage=0.9)
    client = store.client()
    model_id = logged_model_id(client.get_model_version(NAME, version.version))
    store.ensure_experiment()
    with mlflow.start_run(run_name="walk-forward") as run:
        mlflow.log_metrics({"sharpe": 1.25}, model_id=model_id)
    text = description.write(NAME, version.version)
    link = f"[walk-forward](#/experiments/{run.info.experiment_id}/runs/{run.info.run_id})"
    assert f"run 1: {link}" in text
    metrics = text.split("#### Metrics", 1)[1]
    assert metrics.index("| sharpe | 1.25 | run 1 |") < metrics.index(
        "| coverage | 0.9 | training run |"
    )

    with mlflow.start_run(run_name="re-measured"):
        mlflow.log_metrics({"coverage": 0.93}, model_id=model_id)
    text = description.write(NAME, version.version)
    assert "| coverage | 0.93 | run 2 |" in text and "run 2: [re-measured](" in text
    assert "| coverage | 0.9 |" not in text  # the newest value of a metric wins


def test_a_long_history_still_fits_mlflows_limit() -> None:
    version = ModelVersion(
        name=NAME,
        version="7",
        creation_timestamp=1_700_000_000_000,
        source="models:/m-0123",
        run_id="r1",
        tags=[
            ModelVersionTag("family", "venue-quantiles"),
            ModelVersionTag("validation_status", "passed"),
            ModelVersionTag("data_source", "synthetic"),
        ],
    )
    entries = [
        AuditEntry(
            event="promote",
            name=NAME,
            alias="champion",
            from_version="6",
            to_version="7",
            actor=ACTOR,
            time=now(),
            reason="x" * 400,
            passed=True,
        )
        for _ in range(40)
    ]
    metrics = {f"metric_{i}": VersionMetric(value=i, run_id="r1", on_model=True) for i in range(60)}
    text = description.render(version, entries, metrics, {})
    assert len(text) <= description.MAX_CHARS
    assert "#### Gate: passed" in text and "| data source | synthetic |" in text
    assert "earlier entries: `tradeserve history" in text


@pytest.mark.skipif(
    chromium_binary() is None,
    reason="no chromium binary on PATH (Debian package `chromium`; .ci/run installs it)",
)
def test_the_mlflow_ui_shows_the_description_of_a_promoted_version(
    registry: Settings, tmp_path: Path
) -> None:
    version = log_table(1e4, coverage=0.9)
    promote(NAME, version.version, reason="checked in the UI")
    home = registry.home_dir
    with mlflow_server(
        f"sqlite:///{home / 'mlflow.db'}", str(home / "mlartifacts"), log_dir=tmp_path
    ) as server:
        url = f"{server.url}/#/models/{NAME}/versions/{version.version}"
        text = page_text(url, until=lambda seen: "Gate:" in seen)
    assert "Gate: passed" in text, text[:2000]
    assert f"promote champion none → v1 {ACTOR} passed checked in the UI" in text
    assert "data source synthetic-ticks" in text and "data digest sha256:5f1e9c" in text
    assert "coverage 0.9 training run" in text
