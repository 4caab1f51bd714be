"""Gated promotion, rollback, audit and stage fallback on both registry backends.

Every backend-dependent test runs twice: on the embedded registry (SQLite + local
artifacts) and against the real ``mlflow server`` on PostgreSQL + S3 (moto). Models are
cheap but real: venue-quantiles tables and untrained specialist policies logged through
their training hooks. Broken versions are broken where they live: their weights are
deleted or overwritten in the artifact store itself (the local folder, or the S3 bucket
behind the server), or their weights are NaN from the start.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from registry import store
from registry.audit import AuditEntry, history, now, settled
from registry.catalog import list_models
from registry.errors import (
    GateError,
    ModelNotFoundError,
    NotPromotedError,
    RegistryUnavailableError,
    TradeserveError,
)
from registry.families import specialist_name
from registry.gate import MetricThreshold
from registry.loading import load_version
from registry.promotion import promote, rollback
from registry.resolve import latest_version, resolve
from registry.settings import Settings, get_settings
from tests.registry.conftest import ServerStack
from tests.specialist_versions import log_saved_specialist
from training_hooks.features import FEATURE_NAMES
from training_hooks.registration import Lineage, RegisteredVersion
from training_hooks.specialist.runtime import (
    WEIGHTS_FILE,
    PolicyNetwork,
    SpecialistConfig,
    save_specialist,
)
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.runtime import SymbolThresholds, VenueTable

ACTOR = "alice@desk"
VENUE = "test-venue"
TABLE_NAME = f"venue-quantiles-{VENUE}"
LINEAGE = Lineage(data_source="synthetic")
BACKENDS = ["embedded", pytest.param("remote", marks=pytest.mark.server)]


# ------------------------------------------------------------------------------ backends


@dataclass
class Backend:
    """The registry a test runs against, with direct access to its artifact store."""

    kind: str
    settings: Settings
    stack: ServerStack | None

    def model_location(self, name: str, version: str) -> str:
        """Artifact location of the logged model behind a registered version."""
        client = store.client()
        source = client.get_model_version(name, version).source
        assert source.startswith("models:/m-"), source
        return client.get_logged_model(source.removeprefix("models:/")).artifact_location

    def replace_file(self, name: str, version: str, filename: str, content: bytes | None) -> str:
        """Overwrite (or delete, with ``None``) one file of a version in the artifact store.

        Goes around MLflow on purpose: this is damage done to the store after logging.
        """
        location = self.model_location(name, version)
        if self.stack is None:
            root = Path(unquote(urlparse(location).path))
            assert root.is_relative_to(self.settings.home_dir), location  # not ./mlruns
            (path,) = (p for p in root.rglob(filename) if p.is_file())
            if content is None:
                path.unlink()
            else:
                path.write_bytes(content)
            return str(path)
        parsed = urlparse(location)
        assert parsed.scheme == "mlflow-artifacts", location  # proxied: the server owns S3
        prefix = f"{self.stack.artifact_prefix}/{parsed.path.strip('/')}/"
        (key,) = (k for k in self.stack.s3.object_keys(prefix) if k.endswith(f"/{filename}"))
        s3 = self.stack.s3.client()
        if content is None:
            s3.delete_object(Bucket=self.stack.s3.bucket, Key=key)
        else:
            s3.put_object(Bucket=self.stack.s3.bucket, Key=key, Body=content)
        return key


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with MLflow's own schema, migrated once per module.

    Creating the schema takes seconds; each embedded test starts from a copy instead.
    """
    path = tmp_path_factory.mktemp("sqlite-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()  # runs the migrations
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """The embedded registry or the real server, with TRADESERVE_ACTOR set."""
    settings = request.getfixturevalue(f"{request.param}_registry")
    stack = request.getfixturevalue("mlflow_pg_s3_stack") if request.param == "remote" else None
    if stack is None:  # before anything touches it: a fresh but already migrated database
        shutil.copyfile(request.getfixturevalue("sqlite_template"), settings.home_dir / "mlflow.db")
    monkeypatch.setenv("TRADESERVE_ACTOR", ACTOR)
    get_settings.cache_clear()
    yield Backend(kind=request.param, settings=settings, stack=stack)
    get_settings.cache_clear()


# ------------------------------------------------------------------------------ models


def example_features(rows: int = 4) -> pd.DataFrame:
    values = np.random.default_rng(0).normal(scale=0.02, size=(rows, len(FEATURE_NAMES)))
    return pd.DataFrame(values, columns=list(FEATURE_NAMES))


PolicyFactory = Callable[[str, str], Path]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> PolicyFactory:
    """``policy_dir(role, variant)``: a saved (untrained) specialist artifact, built once.

    Variants: ``"a"``/``"b"`` (two seeds) and ``"nan"`` (finite inputs give NaN output).
    """
    root = tmp_path_factory.mktemp("policies")

    @cache
    def build(role: str, variant: str) -> Path:
        config = SpecialistConfig(role=role)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed({"a": 0, "b": 1, "nan": 2}[variant])
            network = PolicyNetwork(config.architecture)
        if variant == "nan":
            with torch.no_grad():
                network.body[-1].bias.fill_(float("nan"))
        return save_specialist(config, network, root / variant / specialist_name(role))

    return build


def log_policy(
    policy_dir: PolicyFactory, role: str, variant: str, metrics: dict[str, float] | None = None
) -> RegisteredVersion:
    """Log a saved policy through the specialist training hook."""
    folder = policy_dir(role, variant)
    config = SpecialistConfig.model_validate_json((folder / "config.json").read_text())
    network = PolicyNetwork(config.architecture)  # only the saved folder is logged
    return log_saved_specialist(
        role, folder, network, example_features(), data_source="synthetic", metrics=metrics
    )


def log_table(medium: float, metrics: dict[str, float] | None = None) -> RegisteredVersion:
    """Log a venue-quantiles table (one of the cheapest real models) as a new version."""
    table = VenueTable(
        venue=VENUE,
        symbols={
            "BTCUSDT": SymbolThresholds(
                medium_notional_threshold=medium, large_notional_threshold=10 * medium
            ),
            "ETHUSDT": SymbolThresholds(
                medium_notional_threshold=medium / 2, large_notional_threshold=5 * medium
            ),
        },
    )
    return log_venue_quantiles(VENUE, table, lineage=LINEAGE, metrics=metrics)


# ------------------------------------------------------------------------------ helpers


def champion_version(name: str) -> str | None:
    aliases = store.client().get_registered_model(name).aliases
    return str(aliases["champion"]) if "champion" in aliases else None


def stages(name: str) -> dict[str, str]:
    versions = store.versions_of(store.client(), name)
    return {str(v.version): v.current_stage for v in versions}


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(store.client().get_model_version(name, version).tags)


def gate_state(name: str, version: str) -> tuple[str | None, str | None]:
    tags = version_tags(name, version)
    return tags.get("validation_status"), tags.get("validation_error")


def events(name: str) -> list[tuple[str, str | None, str, bool]]:
    return [(e.event, e.from_version, e.to_version, e.passed) for e in history(name)]


# ------------------------------------------------------------------------------ promotion


def test_promotion_moves_alias_mirrors_stage_and_is_audited(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = log_table(1e4, metrics={"coverage": 0.9})
    second = log_table(2e4, metrics={"coverage": 0.95})
    assert gate_state(TABLE_NAME, first.version) == ("pending", None)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the gate downloads to

    started = now()
    result = promote(TABLE_NAME, first.version, reason="initial thresholds")
    assert (result.event, result.from_version, result.to_version) == ("promote", None, "1")
    assert result.changed and result.report.passed
    assert result.summary() == f"{TABLE_NAME}@champion: no version -> version 1 (promote)"

    result = promote(TABLE_NAME, second.version, reason="wider venue coverage")
    finished = now()
    assert (result.from_version, result.to_version, result.changed) == ("1", "2", True)
    assert "load" in result.report.checks
    assert list(scratch.iterdir()) == []  # the gate's downloads are gone

    assert champion_version(TABLE_NAME) == "2"
    assert stages(TABLE_NAME) == {"1": "Archived", "2": "Production"}
    assert gate_state(TABLE_NAME, "1") == ("passed", None)
    assert gate_state(TABLE_NAME, "2") == ("passed", None)
    resolved = resolve(TABLE_NAME)
    assert (resolved.version, resolved.alias, resolved.stage) == ("2", "champion", "Production")

    entries = history(TABLE_NAME)
    assert [(e.event, e.from_version, e.to_version) for e in entries] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
    ]
    assert [e.reason for e in entries] == ["initial thresholds", "wider venue coverage"]
    assert all(e.actor == ACTOR and e.passed and e.alias == "champion" for e in entries)
    assert started <= entries[0].time <= entries[1].time <= finished
    page = store.client().get_model_version(TABLE_NAME, "2").description  # the UI's view
    assert "#### Gate: passed" in page and "| coverage | 0.95 | training run |" in page
    assert f"| promote | champion | v1 → v2 | {ACTOR} | passed | wider venue coverage |" in page

    (summary,) = list_models()
    assert (summary.family, summary.name, summary.version) == ("venue-quantiles", TABLE_NAME, "2")
    assert (summary.alias, summary.stage, summary.versions) == ("champion", "Production", 2)
    assert summary.validation_status == "passed" and summary.last_promotion == entries[1].time

    # The promoted version is what loading the champion gives.
    loaded = load_version(resolved)
    frame = pd.DataFrame({"symbol": ["BTCUSDT"]})
    assert loaded.runtime.predict(frame)["medium_notional_threshold"].tolist() == [2e4]

    again = promote(TABLE_NAME, "2")
    assert not again.changed and "already version 2" in again.summary()
    assert stages(TABLE_NAME) == {"1": "Archived", "2": "Production"}


def test_unknown_names_and_missing_history_are_clear_errors(backend: Backend) -> None:
    log_table(1e4)
    with pytest.raises(ModelNotFoundError, match="registered model 'venue-quantiles-nope'"):
        promote("venue-quantiles-nope", "1")
    with pytest.raises(ModelNotFoundError, match=f"version 7 of model '{TABLE_NAME}'"):
        promote(TABLE_NAME, "7")
    with pytest.raises(ModelNotFoundError, match="'venue-quantiles-nope'"):
        history("venue-quantiles-nope")
    with pytest.raises(ModelNotFoundError, match="'venue-quantiles-nope'"):
        rollback("venue-quantiles-nope")
    assert champion_version(TABLE_NAME) is None and history(TABLE_NAME) == []

    with pytest.raises(TradeserveError, match=f"no earlier champion of '{TABLE_NAME}'"):
        rollback(TABLE_NAME)
    promote(TABLE_NAME, "1")
    with pytest.raises(TradeserveError, match="nothing to roll back to"):
        rollback(TABLE_NAME)
    assert champion_version(TABLE_NAME) == "1"


def test_unloadable_versions_fail_the_gate_and_the_champion_stays(
    backend: Backend, policy_dir: PolicyFactory
) -> None:
    name = specialist_name("bull")
    good = log_policy(policy_dir, "bull", "a")
    deleted = log_policy(policy_dir, "bull", "b")
    corrupt = log_policy(policy_dir, "bull", "b")
    promote(name, good.version, reason="baseline")

    backend.replace_file(name, deleted.version, WEIGHTS_FILE, None)
    with pytest.raises(GateError) as missing:
        promote(name, deleted.version, reason="try the new seed")
    message = str(missing.value)
    assert message.startswith(f"version 2 of '{name}' failed the promotion gate: cannot load: ")
    assert "SpecialistError: specialist weights not found" in message
    assert message.endswith("champion stays version 1")

    backend.replace_file(name, corrupt.version, WEIGHTS_FILE, b"these bytes are not safetensors")
    with pytest.raises(
        GateError, match=r"cannot load: SafetensorError: .*champion stays version 1"
    ):
        promote(name, corrupt.version)

    assert champion_version(name) == "1"
    assert stages(name) == {"1": "Production", "2": "None", "3": "None"}
    assert gate_state(name, "1") == ("passed", None)
    for version, cause in (("2", "weights not found"), ("3", "SafetensorError")):
        status, error = gate_state(name, version)
        assert status == "failed" and error is not None
        assert error.startswith("cannot load: ") and cause in error

    failed = [e for e in history(name) if not e.passed]
    assert [(e.from_version, e.to_version, e.actor) for e in failed] == [
        ("1", "2", ACTOR),
        ("1", "3", ACTOR),
    ]
    assert failed[0].reason == "try the new seed"
    assert "weights not found" in failed[0].problems[0]

    # The champion is untouched and still serves.
    champion = load_version(resolve(name))
    probabilities = champion.runtime.predict(example_features())
    assert np.isfinite(probabilities.to_numpy()).all()
    assert champion.resolved.version == "1"


def test_non_finite_predictions_fail_the_gate(backend: Backend, policy_dir: PolicyFactory) -> None:
    bear = specialist_name("bear")
    log_policy(policy_dir, "bear", "a")
    nan_version = log_policy(policy_dir, "bear", "nan")
    promote(bear, "1")
    with pytest.raises(GateError, match=r"non-finite values \(NaN or inf\)") as raised:
        promote(bear, nan_version.version, reason="nan weights")
    assert str(raised.value).endswith("champion stays version 1")
    assert champion_version(bear) == "1"
    assert stages(bear) == {"1": "Production", "2": "None"}
    status, error = gate_state(bear, "2")
    assert status == "failed" and "non-finite" in (error or "")
    assert events(bear) == [("promote", None, "1", True), ("promote", "1", "2", False)]

    # A model whose only version predicts NaN never gets a champion at all.
    sideways = specialist_name("sideways")
    log_policy(policy_dir, "sideways", "nan")
    with pytest.raises(GateError, match=r"non-finite.*champion stays unset"):
        promote(sideways, "1")
    with pytest.raises(NotPromotedError, match=f"tradeserve promote {sideways}"):
        resolve(sideways)
    assert stages(sideways) == {"1": "None"}


# ------------------------------------------------------------------------------ thresholds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("val_accuracy>=0.4", ("val_accuracy", ">=", 0.4)),
        (" val_sharpe > -0.5 ", ("val_sharpe", ">", -0.5)),
        ("log_loss<=1e-3", ("log_loss", "<=", 1e-3)),
        ("val/rmse<2", ("val/rmse", "<", 2.0)),
        ("trades==12", ("trades", "==", 12.0)),
    ],
)
def test_threshold_syntax(text: str, expected: tuple[str, str, float]) -> None:
    threshold = MetricThreshold.parse(text)
    assert (threshold.metric, threshold.op, threshold.value) == expected
    assert MetricThreshold.parse(str(threshold)) == threshold


@pytest.mark.parametrize(
    "text", ["val_accuracy", "val_accuracy=0.4", ">=0.4", "acc>=", "acc>=high", "acc>=1.2.3"]
)
def test_bad_threshold_syntax_is_a_user_error(text: str) -> None:
    with pytest.raises(TradeserveError, match=r"cannot read threshold .*METRIC>=VALUE"):
        MetricThreshold.parse(text)


def test_metric_thresholds_gate_promotion(backend: Backend) -> None:
    log_table(1e4, metrics={"coverage": 0.9, "staleness_days": 3.0})
    too_strict = [
        MetricThreshold.parse("coverage>=0.95"),
        MetricThreshold.parse("staleness_days<5"),
    ]
    with pytest.raises(GateError, match=r"coverage=0.9 fails coverage>=0.95\. champion stays"):
        promote(TABLE_NAME, "1", thresholds=too_strict)
    with pytest.raises(GateError, match=r"'sharpe' was not logged \(logged: coverage, staleness"):
        promote(TABLE_NAME, "1", thresholds=[MetricThreshold.parse("sharpe>0")])
    assert champion_version(TABLE_NAME) is None
    # unmet requirements refuse before the gate: the version is not marked broken
    assert gate_state(TABLE_NAME, "1") == ("pending", None)

    result = promote(
        TABLE_NAME,
        "1",
        thresholds=[
            MetricThreshold.parse("coverage>=0.9"),
            MetricThreshold.parse("staleness_days<5"),
        ],
    )
    assert "metric thresholds" in result.report.checks
    assert champion_version(TABLE_NAME) == "1"
    assert gate_state(TABLE_NAME, "1") == ("passed", None)
    assert events(TABLE_NAME) == [
        ("promote", None, "1", False),
        ("promote", None, "1", False),
        ("promote", None, "1", True),
    ]


def audit_tags(name: str, version: str) -> dict[str, str]:
    """The raw audit tags on one version, as stored (pending or not)."""
    return {k: v for k, v in version_tags(name, version).items() if k.startswith("audit.")}


def registry_outage(*_args: object, **_kwargs: object) -> None:
    raise MlflowException("API request to http://registry failed with exception: refused")


def test_a_failure_during_promotion_leaves_alias_and_audit_agreeing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alias and the audit trail hold both a move or neither, wherever it fails."""
    for medium in (1e4, 2e4, 3e4):
        log_table(medium)
    promote(TABLE_NAME, "1")

    # The alias call fails: no move, and the pending entry written before it is removed.
    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "set_registered_model_alias", registry_outage)
        with pytest.raises(RegistryUnavailableError):
            promote(TABLE_NAME, "2")
    assert champion_version(TABLE_NAME) == "1"
    assert audit_tags(TABLE_NAME, "2") == {}
    assert events(TABLE_NAME) == [("promote", None, "1", True)]

    # ... and the registry stays unreachable for the clean-up: the entry is left pending on
    # the version, and readers drop it since the alias never moved.
    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "set_registered_model_alias", registry_outage)
        patch.setattr(MlflowClient, "delete_model_version_tag", registry_outage)
        with pytest.raises(RegistryUnavailableError):
            promote(TABLE_NAME, "2")
    [left] = audit_tags(TABLE_NAME, "2").values()
    assert AuditEntry.model_validate_json(left).state == "pending"
    assert champion_version(TABLE_NAME) == "1"
    assert events(TABLE_NAME) == [("promote", None, "1", True)]
    (summary,) = list_models()
    assert summary.last_promotion == history(TABLE_NAME)[0].time

    # The failure comes after the alias moved (mirroring the stage): the entry is confirmed.
    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "transition_model_version_stage", registry_outage)
        with pytest.raises(RegistryUnavailableError):
            promote(TABLE_NAME, "3")
    assert champion_version(TABLE_NAME) == "3"
    assert events(TABLE_NAME) == [("promote", None, "1", True), ("promote", "1", "3", True)]
    assert all(e.state == "done" for e in history(TABLE_NAME))
    assert rollback(TABLE_NAME).to_version == "1"  # the trail rollback replays is the true one


def test_pending_entries_are_settled_by_what_the_registry_shows() -> None:
    def entry(to: str, came_from: str | None, state: str = "done") -> AuditEntry:
        return AuditEntry(
            event="promote",
            name=TABLE_NAME,
            alias="champion",
            from_version=came_from,
            to_version=to,
            actor=ACTOR,
            time=now(),
            passed=True,
            state=state,
        )

    moved, failed = entry("2", "1", "pending"), entry("3", "2", "pending")
    trail = [entry("1", None), moved, entry("4", "2"), failed]
    # "2" held the alias after its entry (the next one moved it from there); "3" never did
    assert [e.to_version for e in settled(trail, {"champion": "4"})] == ["1", "2", "4"]
    # the last pending entry is confirmed when its version holds the alias now
    assert [e.to_version for e in settled(trail[:2], {"champion": "2"})] == ["1", "2"]
    assert [e.state for e in settled(trail[:2], {"champion": "2"})] == ["done", "done"]
    assert [e.to_version for e in settled(trail[:2], {"champion": "1"})] == ["1"]


def test_names_with_quotes_are_listed_and_resolved(backend: Backend) -> None:
    """MLflow accepts any character in a name (its UI and API create these); tradeserve reads
    them without breaking its filter strings, and never mixes up look-alike names."""
    source = store.client().get_model_version(TABLE_NAME, log_table(1e4).version).source
    names = ["it's-a-model", """o'neil "quoted" \\ model""", "o_neil _quoted_ _ model"]
    client = store.client()
    for count, name in enumerate(names, start=1):
        client.create_registered_model(name)
        for _ in range(count):
            client.create_model_version(
                name,
                source,
                tags={"family": "venue-quantiles"},
                model_id=source.removeprefix("models:/"),
            )
    listed = {summary.name: summary.versions for summary in list_models()}
    assert listed == {TABLE_NAME: 1, names[0]: 1, names[1]: 2, names[2]: 3}
    for count, name in enumerate(names, start=1):
        assert latest_version(name).version == str(count)
        assert history(name) == []
        assert [str(v.version) for v in store.versions_of(client, name, newest=1)] == [str(count)]


# ------------------------------------------------------------------------------ rollback


def test_rollback_walks_back_through_earlier_champions(backend: Backend) -> None:
    for medium in (1e4, 2e4, 3e4):
        version = log_table(medium)
        promote(TABLE_NAME, version.version)
    assert champion_version(TABLE_NAME) == "3"

    result = rollback(TABLE_NAME, reason="v3 thresholds too wide")
    assert (result.event, result.from_version, result.to_version) == ("rollback", "3", "2")
    assert result.summary() == f"{TABLE_NAME}@champion: version 3 -> version 2 (rollback)"
    assert champion_version(TABLE_NAME) == "2"
    assert stages(TABLE_NAME) == {"1": "Archived", "2": "Production", "3": "Archived"}

    assert rollback(TABLE_NAME).to_version == "1"
    assert champion_version(TABLE_NAME) == "1"
    assert stages(TABLE_NAME) == {"1": "Production", "2": "Archived", "3": "Archived"}

    with pytest.raises(TradeserveError, match="nothing to roll back to"):
        rollback(TABLE_NAME)
    assert champion_version(TABLE_NAME) == "1"

    entries = history(TABLE_NAME)
    assert [(e.event, e.from_version, e.to_version) for e in entries[3:]] == [
        ("rollback", "3", "2"),
        ("rollback", "2", "1"),
    ]
    assert entries[3].reason == "v3 thresholds too wide" and entries[3].actor == ACTOR

    # Someone moves the alias in the MLflow UI: rollback returns to tradeserve's last champion.
    store.client().set_registered_model_alias(TABLE_NAME, "champion", "3")
    result = rollback(TABLE_NAME, reason="undo the UI change")
    assert (result.from_version, result.to_version) == ("3", "1")
    assert champion_version(TABLE_NAME) == "1"
    assert stages(TABLE_NAME) == {"1": "Production", "2": "Archived", "3": "Archived"}


def test_rollback_goes_through_the_gate(backend: Backend, policy_dir: PolicyFactory) -> None:
    """A rollback target whose weights broke since it was champion is refused like a
    promotion: the alias stays, the failure is audited."""
    name = specialist_name("bull")
    first = log_policy(policy_dir, "bull", "a")
    second = log_policy(policy_dir, "bull", "b")
    promote(name, first.version)
    promote(name, second.version)
    backend.replace_file(name, first.version, WEIGHTS_FILE, b"no longer safetensors")
    with pytest.raises(GateError, match=r"SafetensorError: .*champion stays version 2"):
        rollback(name, reason="undo v2")
    assert champion_version(name) == "2"
    last = history(name)[-1]
    assert (last.event, last.from_version, last.to_version, last.passed) == (
        "rollback",
        "2",
        "1",
        False,
    )


# ------------------------------------------------------------------------------ resolution


def test_resolve_falls_back_to_a_stage_set_in_the_ui(backend: Backend) -> None:
    log_table(1e4)
    log_table(2e4)
    client = store.client()
    client.transition_model_version_stage(TABLE_NAME, "2", "Production")  # MLflow UI stage view

    by_stage = resolve(TABLE_NAME)
    assert (by_stage.version, by_stage.alias, by_stage.stage) == ("2", None, "Production")
    (summary,) = list_models()
    assert (summary.version, summary.alias, summary.stage) == ("2", None, "Production")
    frame = pd.DataFrame({"symbol": ["BTCUSDT"]})
    loaded = load_version(by_stage)
    assert loaded.runtime.predict(frame)["medium_notional_threshold"].tolist() == [2e4]

    promote(TABLE_NAME, "1", reason="alias wins over stage")
    by_alias = resolve(TABLE_NAME)
    assert (by_alias.version, by_alias.alias, by_alias.stage) == ("1", "champion", "Production")
    assert stages(TABLE_NAME) == {"1": "Production", "2": "Archived"}


def test_other_aliases_move_without_touching_the_stage(backend: Backend) -> None:
    log_table(1e4)
    log_table(2e4)
    promote(TABLE_NAME, "1")
    result = promote(TABLE_NAME, "2", alias="challenger")
    assert (result.alias, result.from_version, result.to_version) == ("challenger", None, "2")
    aliases = store.client().get_registered_model(TABLE_NAME).aliases
    assert {alias: str(version) for alias, version in aliases.items()} == {
        "champion": "1",
        "challenger": "2",
    }
    assert stages(TABLE_NAME) == {"1": "Production", "2": "None"}
    assert resolve(TABLE_NAME, "challenger").version == "2"
    assert [e.alias for e in history(TABLE_NAME)] == ["champion", "challenger"]
    assert [e.to_version for e in history(TABLE_NAME, "challenger")] == ["2"]


def test_audit_entries_round_trip() -> None:
    entry = AuditEntry(
        event="promote",
        name=TABLE_NAME,
        alias="champion",
        from_version=None,
        to_version="1",
        actor=ACTOR,
        time=now(),
        passed=False,
        problems=["cannot load: x"],
    )
    assert AuditEntry.model_validate_json(entry.model_dump_json()) == entry
    assert entry.tag_key.startswith("audit.champion.") and entry.tag_key.endswith("Z")
