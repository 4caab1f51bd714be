"""Fixtures of the service tests: each family service as a real ``bentoml serve`` process on
the demo registry, on a free port, once per session, each with a BentoML home of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bento import BentoServer, bento_server
from tests.demo_fixtures import demo_env, own_bentoml_home


def serve_demo(target: str, home: Path, logs: Path, **extra: str) -> Iterator[BentoServer]:
    """``target`` served on the demo registry in ``home`` (for ``yield from`` in a fixture):
    its own BentoML home and log under ``logs``, ``extra`` added to its environment."""
    env = demo_env(home, BENTOML_HOME=own_bentoml_home(home, logs), **extra)
    with bento_server(target, env, logs / "serve.log") as server:
        yield server


@pytest.fixture(scope="session")
def chronos_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.chronos.service:ChronosForecaster", demo_home, tmp_path_factory.mktemp("chronos")
    )


@pytest.fixture(scope="session")
def factor_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.factor.service:FactorModels", demo_home, tmp_path_factory.mktemp("factor")
    )


@pytest.fixture(scope="session")
def specialists_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.specialists.service:Specialists", demo_home, tmp_path_factory.mktemp("specialists")
    )
