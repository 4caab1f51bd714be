"""Fixtures of the composite tests: RegimeBlend (+ Specialists) served by ``bentoml serve`` at
the repository root, as ``make serve`` does, each server with a BentoML home of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bento import BentoServer
from tests.demo_fixtures import demo_env, own_bentoml_home

ROOT_TARGET = "."  # `bentoml serve .` = `bentoml serve`: BentoML reads ./bentofile.yaml


def serve_root(home: Path, state: Path, log: Path, **extra_env: str) -> BentoServer:
    """The composite on the registry in ``home`` (not started), keeping its decisions and
    portfolio in ``state``; its BentoML home lies next to ``log``."""
    env = demo_env(
        home,
        TRADESERVE_BLEND_STATE_DIR=str(state),
        BENTOML_HOME=own_bentoml_home(home, log.parent),
        **extra_env,
    )
    return BentoServer(ROOT_TARGET, env, log)


@pytest.fixture(scope="session")
def blend_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """The composite on the demo registry, once per session."""
    folder = tmp_path_factory.mktemp("regime-blend")
    with serve_root(demo_home, folder / "state", folder / "serve.log") as server:
        yield server
