"""The real ``tradeserve`` console script against a small embedded registry.

The registry is filled in-process once per module (venue-quantiles tables and untrained
specialist policies, logged through their training hooks), then every command runs as its
own process with only ``TRADESERVE_HOME`` pointing at it, the way a user runs it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from harness.ports import free_port
from registry import store
from registry.audit import history
from registry.promotion import promote
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris
from tests.demo_fixtures import demo_env
from tests.specialist_versions import log_saved_specialist
from training_hooks.features import FEATURE_NAMES
from training_hooks.registration import Lineage
from training_hooks.specialist.runtime import (
    PolicyNetwork,
    SpecialistConfig,
    save_specialist,
)
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.runtime import SymbolThresholds, VenueTable

TRADESERVE = Path(sys.executable).with_name("tradeserve")
ACTOR = "cli-tester"
ALPHA = "venue-quantiles-alpha"  # v1 champion, v2 not promoted: read by the listing tests
BETA = "venue-quantiles-beta"  # three versions, never promoted: the promote/rollback flow
GAMMA = "venue-quantiles-gamma"  # one version, never promoted
DELTA = "venue-quantiles-delta"  # one version: a challenger promoted by one test, read back
EPSILON = "venue-quantiles-epsilon"  # two versions, never promoted: the --json flow
BEAR = "specialist-bear"  # v1 champion, v2 predicts NaN


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def log_table(venue: str, medium: float, coverage: float) -> None:
    table = VenueTable(
        venue=venue,
        symbols={
            "BTCUSDT": SymbolThresholds(
                medium_notional_threshold=medium, large_notional_threshold=10 * medium
            )
        },
    )
    log_venue_quantiles(
        venue, table, lineage=Lineage(data_source="synthetic"), metrics={"coverage": coverage}
    )


def log_policy(root: Path, role: str, nan: bool) -> None:
    config = SpecialistConfig(role=role)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = PolicyNetwork(config.architecture)
    if nan:
        with torch.no_grad():
            network.body[-1].bias.fill_(float("nan"))
    folder = save_specialist(
        config, network, root / ("nan" if nan else "ok") / f"specialist-{role}"
    )
    example = pd.DataFrame(
        np.random.default_rng(0).normal(scale=0.02, size=(3, len(FEATURE_NAMES))),
        columns=list(FEATURE_NAMES),
    )
    log_saved_specialist(role, folder, network, example, data_source="synthetic")


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRADESERVE_HOME whose embedded registry holds the models above, filled in-process."""
    home = tmp_path_factory.mktemp("cli-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRADESERVE_HOME", str(home))
        patch.setenv("TRADESERVE_ACTOR", "fixture")
        clear_mlflow_uris(patch)
        get_settings.cache_clear()
        store.configure()
        for medium, coverage in ((1e4, 0.9), (2e4, 0.8)):
            log_table("alpha", medium, coverage)
        for medium in (1e4, 2e4, 3e4):
            log_table("beta", medium, 0.9)
        log_table("gamma", 1e4, 0.9)
        log_table("delta", 1e4, 0.9)
        for medium in (1e4, 2e4):
            log_table("epsilon", medium, 0.9)
        log_policy(home / "policies", "bear", nan=False)
        log_policy(home / "policies", "bear", nan=True)
        promote(ALPHA, "1", reason="fixture")
        promote(BEAR, "1", reason="fixture")
        if mlflow.active_run():
            mlflow.end_run()
    get_settings.cache_clear()
    return home


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The user's environment: no MLflow or registry variables, only TRADESERVE_HOME."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "TRADESERVE_"))
    }
    return {**env, "TRADESERVE_HOME": str(home), "TRADESERVE_ACTOR": ACTOR, **extra}


def tradeserve(home: Path, *args: str, **extra_env: str) -> Result:
    completed = subprocess.run(
        [str(TRADESERVE), *args],
        env=cli_env(home, **extra_env),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)


def ok(home: Path, *args: str, **extra_env: str) -> str:
    result = tradeserve(home, *args, **extra_env)
    assert result.returncode == 0, f"tradeserve {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def on_a_terminal(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run the console script with stdout and stderr on a pseudo-terminal, as a user at a
    shell does; return what it drew, escape sequences removed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(TRADESERVE), *args],
        env={**env, "COLUMNS": "200", "TERM": "xterm"},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    drawn = bytearray()
    try:
        while select.select([leader], [], [], 120)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        assert process.wait(timeout=120) == 0, drawn.decode(errors="replace")
    finally:
        process.kill()
        os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode())


def table_cells(drawn: str, key: str) -> list[str]:
    """The cells of the rich table row that mentions ``key``."""
    (line,) = [line for line in drawn.splitlines() if f" {key} " in line and "│" in line]
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def one_line_error(result: Result) -> str:
    """The failure's single stderr line (asserted), without the 'tradeserve: ' prefix."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    assert lines[0].startswith("tradeserve: "), lines[0]
    return lines[0].removeprefix("tradeserve: ")


def models_json(home: Path) -> dict[str, dict[str, object]]:
    return {entry["name"]: entry for entry in json.loads(ok(home, "models", "--json"))}


# ------------------------------------------------------------------------------ listing


def test_models_table(cli_home: Path) -> None:
    lines = ok(cli_home, "models").splitlines()
    assert lines[0].split() == [
        "FAMILY",
        "NAME",
        "CHAMPION",
        "STAGE",
        "VERSIONS",
        "LAST",
        "PROMOTION",
        "(UTC)",
    ]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert set(rows) == {ALPHA, BETA, GAMMA, DELTA, EPSILON, BEAR}
    assert rows[ALPHA][:5] == ["venue-quantiles", ALPHA, "1", "Production", "2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(rows[ALPHA][5:]))
    assert rows[GAMMA][:5] == ["venue-quantiles", GAMMA, "-", "-", "1"]
    assert rows[BEAR][:3] == ["specialist", BEAR, "1"]


def test_models_json(cli_home: Path) -> None:
    listed = json.loads(ok(cli_home, "models", "--json"))
    assert isinstance(listed, list) and [entry["name"] for entry in listed] == sorted(
        [BEAR, ALPHA, BETA, GAMMA, DELTA, EPSILON],
        key=lambda name: (name.startswith("venue"), name),
    )
    for entry in listed:
        assert {"family", "name", "version", "alias", "stage"} <= set(entry)
    by_name = {entry["name"]: entry for entry in listed}
    alpha = by_name[ALPHA]
    assert (alpha["family"], alpha["version"], alpha["alias"], alpha["stage"]) == (
        "venue-quantiles",
        "1",
        "champion",
        "Production",
    )
    assert alpha["versions"] == 2 and alpha["validation_status"] == "passed"
    gamma = by_name[GAMMA]
    assert (gamma["version"], gamma["alias"], gamma["stage"]) == (None, None, None)
    assert by_name[BEAR]["family"] == "specialist"


def test_tables_on_a_terminal_are_rich(cli_home: Path) -> None:
    """At a terminal `models` and `history` draw rich tables with the same content."""
    drawn = on_a_terminal(cli_env(cli_home), cli_home, "models")
    assert "┃ FAMILY" in drawn  # rich's heavy header rule, not the plain table
    assert table_cells(drawn, ALPHA)[:5] == ["venue-quantiles", ALPHA, "1", "Production", "2"]
    assert table_cells(drawn, GAMMA)[:5] == ["venue-quantiles", GAMMA, "-", "-", "1"]

    drawn = on_a_terminal(cli_env(cli_home), cli_home, "history", ALPHA)
    cells = table_cells(drawn, "fixture")
    assert cells[1:] == ["promote", "champion", "-", "1", "fixture", "passed", "fixture"]


def test_help_lists_every_command(cli_home: Path) -> None:
    text = ok(cli_home, "--help")
    for command in ("models", "promote", "rollback", "history", "demo"):
        assert re.search(rf"^\W*{command}\b", text, re.MULTILINE), text


# ------------------------------------------------------------------------------ flow


def test_promote_rollback_and_history(cli_home: Path) -> None:
    assert ok(cli_home, "promote", BETA, "1").strip() == (
        f"{BETA}@champion: no version -> version 1 (promote)"
    )
    out = ok(
        cli_home, "promote", BETA, "2", "--reason", "tighter BTC size", "--require", "coverage>=0.5"
    )
    assert out.strip() == f"{BETA}@champion: version 1 -> version 2 (promote)"
    ok(cli_home, "promote", BETA, "3", "-r", "third")

    out = ok(cli_home, "rollback", BETA, "--reason", "v3 misbehaves")
    assert out.strip() == f"{BETA}@champion: version 3 -> version 2 (rollback)"
    beta = models_json(cli_home)[BETA]
    assert (beta["version"], beta["alias"], beta["stage"]) == ("2", "champion", "Production")

    entries = json.loads(ok(cli_home, "history", BETA, "--json"))
    assert [(e["event"], e["from_version"], e["to_version"]) for e in entries] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("promote", "2", "3"),
        ("rollback", "3", "2"),
    ]
    assert {e["actor"] for e in entries} == {ACTOR}
    assert [e["reason"] for e in entries] == [None, "tighter BTC size", "third", "v3 misbehaves"]
    assert all(e["passed"] for e in entries)

    table = ok(cli_home, "history", BETA).splitlines()
    assert table[0].split() == [
        "TIME",
        "(UTC)",
        "EVENT",
        "ALIAS",
        "FROM",
        "TO",
        "ACTOR",
        "GATE",
        "REASON",
    ]
    assert len(table) == 5
    last = table[-1].split()
    assert last[2:9] == ["rollback", "champion", "3", "2", ACTOR, "passed", "v3"]

    out = ok(cli_home, "rollback", BETA)
    assert out.strip() == f"{BETA}@champion: version 2 -> version 1 (rollback)"
    assert "nothing to roll back to" in one_line_error(tradeserve(cli_home, "rollback", BETA))


def test_promote_and_rollback_json(cli_home: Path) -> None:
    """--json prints the PromotionResult alone on stdout."""
    first = json.loads(ok(cli_home, "promote", EPSILON, "1", "--json"))
    assert (first["event"], first["name"], first["alias"]) == ("promote", EPSILON, "champion")
    assert (first["from_version"], first["to_version"], first["changed"]) == (None, "1", True)
    assert (first["report"]["version"], first["report"]["problems"]) == ("1", [])

    second = json.loads(ok(cli_home, "promote", EPSILON, "2", "-r", "json", "--json"))
    assert (second["from_version"], second["to_version"], second["changed"]) == ("1", "2", True)
    again = json.loads(ok(cli_home, "promote", EPSILON, "2", "--json"))
    assert (again["to_version"], again["changed"]) == ("2", False)

    back = json.loads(ok(cli_home, "rollback", EPSILON, "--json"))
    assert (back["event"], back["from_version"], back["to_version"]) == ("rollback", "2", "1")
    assert back["changed"] and back["report"]["problems"] == []
    assert models_json(cli_home)[EPSILON]["version"] == "1"


def test_history_of_a_model_never_promoted(cli_home: Path) -> None:
    assert ok(cli_home, "history", GAMMA).strip() == f"No promotions of '{GAMMA}' are recorded."
    assert json.loads(ok(cli_home, "history", GAMMA, "--json")) == []


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ("promote", "venue-quantiles-nope", "1"),
            "registered model 'venue-quantiles-nope' does not exist in the registry",
            id="promote-unknown-model",
        ),
        pytest.param(
            ("promote", ALPHA, "9"),
            f"version 9 of model '{ALPHA}' does not exist in the registry",
            id="promote-unknown-version",
        ),
        pytest.param(
            ("rollback", "venue-quantiles-nope"),
            "registered model 'venue-quantiles-nope' does not exist in the registry",
            id="rollback-unknown-model",
        ),
        pytest.param(
            ("history", "specialist-bull"),
            "registered model 'specialist-bull' does not exist in the registry",
            id="history-unknown-model",
        ),
        pytest.param(
            ("rollback", GAMMA),
            f"no earlier champion of '{GAMMA}' is recorded, so there is nothing to roll back "
            f"to; promote a version explicitly with `tradeserve promote {GAMMA} VERSION`",
            id="rollback-without-history",
        ),
        pytest.param(
            ("promote", ALPHA, "2", "--require", "coverage=>0.5"),
            "cannot read threshold 'coverage=>0.5'; write it as METRIC>=VALUE (or <=, ==, >, <)",
            id="threshold-syntax",
        ),
        pytest.param(
            ("promote", ALPHA),
            "Missing argument 'version'. (see `tradeserve promote --help`)",
            id="missing-argument",
        ),
        pytest.param(
            ("prmote", ALPHA, "1"),
            "No such command 'prmote'. Did you mean 'promote'? (see `tradeserve --help`)",
            id="unknown-command",
        ),
        pytest.param(
            ("promote", ALPHA, "2", "--require", "coverage>=0.5.1"),
            "cannot read threshold 'coverage>=0.5.1'; write it as METRIC>=VALUE (or <=, ==, >, <)",
            id="threshold-number",
        ),
        pytest.param(
            ("promote", ALPHA, "two"),
            "Invalid value for 'version': Input should be a valid integer, unable to parse "
            "string as an integer (see `tradeserve promote --help`)",
            id="version-not-a-number",
        ),
        pytest.param(
            ("promote", ALPHA, "0"),
            "Invalid value for 'version': Input should be greater than or equal to 1 "
            "(see `tradeserve promote --help`)",
            id="version-zero",
        ),
        pytest.param(
            ("evaluate", "--start", "foo"),
            "Invalid value for '--start': 'foo' is not a day; write it as YYYY-MM-DD "
            "(see `tradeserve evaluate --help`)",
            id="evaluate-start-not-a-day",
        ),
        pytest.param(
            ("evaluate", "--end", "2018-02-30"),
            "Invalid value for '--end': '2018-02-30' is not a day; write it as YYYY-MM-DD "
            "(see `tradeserve evaluate --help`)",
            id="evaluate-end-not-a-day",
        ),
        pytest.param(
            ("evaluate", "--start", "2019-01-01", "--end", "2018-12-31"),
            "--start 2019-01-01 is after --end 2018-12-31; nothing to evaluate",
            id="evaluate-window-reversed",
        ),
        pytest.param(
            ("evaluate", "--symbols", " , "),
            "Invalid value for '--symbols': ' , ' names nothing; give a comma-separated list "
            "(see `tradeserve evaluate --help`)",
            id="evaluate-no-symbols",
        ),
        pytest.param(
            ("evaluate", "--modes", ","),
            "Invalid value for '--modes': ',' names nothing; give a comma-separated list "
            "(see `tradeserve evaluate --help`)",
            id="evaluate-no-modes",
        ),
        pytest.param(
            ("evaluate", "--model", "specialist-bull", "--no-mlflow"),
            "Invalid value for '--model': 'specialist-bull' is not NAME=VERSION "
            "(e.g. specialist-bull=3) (see `tradeserve evaluate --help`)",
            id="evaluate-model-without-version",
        ),
        pytest.param(
            ("evaluate", "--modes", "median", "--no-mlflow"),
            "unknown blend mode(s) ['median']; use argmax and/or mixture",
            id="evaluate-unknown-mode",
        ),
        pytest.param(
            ("demo", "--chronos-size", "huge"),
            "'chronos-t5-huge' is not a valid chronos model name (expected "
            "chronos-t5-<tiny|mini|small|base|large>, chronos-bolt-<tiny|mini|small|base> "
            "or chronos-2)",
            id="demo-chronos-size",
        ),
        pytest.param(
            ("build", "--family", "nope"),
            "unknown bento family nope; choose from chronos, factor, specialists, "
            "regime_blend, model_manager",
            id="build-unknown-family",
        ),
        pytest.param(
            ("import", "/does-not-exist", "--name", "desk"),
            "/does-not-exist is not a directory",
            id="import-missing-directory",
        ),
    ],
)
def test_user_errors_are_one_line(cli_home: Path, args: tuple[str, ...], expected: str) -> None:
    assert one_line_error(tradeserve(cli_home, *args)) == expected


def test_gate_failures_are_one_line_and_change_nothing(cli_home: Path) -> None:
    message = one_line_error(tradeserve(cli_home, "promote", BEAR, "2", "--reason", "nan"))
    assert message == (
        f"version 2 of '{BEAR}' failed the promotion gate: the model returned non-finite "
        "values (NaN or inf); action probabilities contain NaN or inf. champion stays version 1"
    )
    message = one_line_error(
        tradeserve(cli_home, "promote", ALPHA, "2", "--require", "coverage>=0.85")
    )
    assert message == (
        f"version 2 of '{ALPHA}' does not meet the promotion requirements: coverage=0.8 "
        "fails coverage>=0.85. champion stays version 1"
    )
    listed = models_json(cli_home)
    assert (listed[BEAR]["version"], listed[ALPHA]["version"]) == ("1", "1")

    rejected = [e for e in json.loads(ok(cli_home, "history", BEAR, "--json")) if not e["passed"]]
    assert [(e["to_version"], e["actor"], e["reason"]) for e in rejected] == [("2", ACTOR, "nan")]
    table = ok(cli_home, "history", BEAR)
    assert "REJECTED: the model returned non-finite values" in table


def test_the_cli_writes_to_the_registry_it_was_pointed_at(
    cli_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the processes did is what the registry holds (read back in-process)."""
    ok(cli_home, "promote", DELTA, "1", "--alias", "challenger", "--reason", "shadow")
    monkeypatch.setenv("TRADESERVE_HOME", str(cli_home))
    clear_mlflow_uris(monkeypatch)
    get_settings.cache_clear()
    try:
        (entry,) = history(DELTA)
        assert (entry.alias, entry.to_version, entry.actor, entry.reason) == (
            "challenger",
            "1",
            ACTOR,
            "shadow",
        )
        model = store.client().get_registered_model(DELTA)
        assert {alias: str(version) for alias, version in model.aliases.items()} == {
            "challenger": "1"
        }
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("command", "retries"),
    [
        pytest.param(("models",), None, id="models-default-retries"),
        pytest.param(("promote", ALPHA, "2"), "0", id="promote-no-retries"),
    ],
)
def test_unreachable_registry_is_one_line(
    cli_home: Path, command: tuple[str, ...], retries: str | None
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    extra = {"MLFLOW_TRACKING_URI": url}
    if retries is not None:
        extra["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = retries
    result = tradeserve(cli_home, *command, **extra)
    assert one_line_error(result) == f"cannot reach the MLflow registry at {url}"


def test_demo_on_a_filled_registry_changes_nothing(demo_home: Path) -> None:
    """`tradeserve demo` is idempotent: run again, it registers and promotes nothing."""
    env = demo_env(demo_home)

    def listing() -> list[dict]:
        done = subprocess.run(
            [str(TRADESERVE), "models", "--json"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    before = listing()
    again = subprocess.run(
        [str(TRADESERVE), "demo"], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert "Nothing to do: all" in again.stdout and "demo models are promoted" in again.stdout

    as_json = subprocess.run(
        [str(TRADESERVE), "demo", "--json"], env=env, capture_output=True, text=True, timeout=600
    )
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)  # the DemoReport alone: progress went to stderr
    assert report["promoted"] == [] and report["already_promoted"]
    assert set(report["already_promoted"]) <= {entry["name"] for entry in before}
    assert "[1/6]" in as_json.stderr

    drawn = on_a_terminal(env, demo_home, "demo")  # the progress bar, driven step by step
    assert re.search(r"demo models .* 6/6", drawn), drawn
    assert listing() == before
