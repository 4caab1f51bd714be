"""Container images built and run without Docker: buildah (``--isolation chroot``) from the
generated Dockerfile and the bento's export, on the cached Debian base when
``python:3.11-slim`` cannot be pulled.

* factor: built from the demo registry's bento, run with the registry unreachable, answers
  ``/readyz`` and ``/predict`` like the promoted models in-process; at most 600 MB; no
  compiler or git inside; installs exactly the pinned closure the bento names.
* composite (RegimeBlend + Specialists): where this machine offers a torch CPU wheel, its CPU
  image answers ``/api/v1/predict`` like the same bento served locally (about 150 s to build).
* torch bentos: the CUDA Dockerfile Docker hosts build parses and names the CUDA base and
  torch's wheel; the CPU one rendered from the same bento names the slim base and CPU wheel.

Build times and sizes of every image: ``python -m bench.images`` (``bench/results/images.*``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest

from bentos.build import BuiltBento
from bentos.images import (
    BuiltImage,
    build_image,
    installed,
    new_container,
    remove_container,
    remove_image,
    requirement_pins,
    run_argv,
    torch_cpu_wheel,
    write_cpu_dockerfile,
)
from harness.bento import bento_server
from harness.ports import free_port
from harness.process import ManagedProcess
from registry.settings import Settings
from tests.demo_fixtures import demo_env, own_bentoml_home
from tests.deploy.conftest import check_baked_factor_models, offline_env, unreachable_registry
from training_hooks.specialist.runtime import ACTIONS

MAX_FACTOR_IMAGE_BYTES = 600 * 10**6
REGISTRY = "localhost/tradeserve-test/"  # images this module creates (removed at the end)

INSTRUCTIONS = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "USER", "WORKDIR", "EXPOSE",
                "ENTRYPOINT", "CMD", "LABEL", "SHELL"}  # fmt: skip


def needs_buildah(test: Callable[..., None]) -> Callable[..., None]:
    """Marks of a test that builds or runs an image with buildah (root, buildah installed)."""
    test = pytest.mark.slow(test)
    test = pytest.mark.skipif(shutil.which("buildah") is None, reason="no buildah")(test)
    return pytest.mark.skipif(os.geteuid() != 0, reason="buildah builds run as root")(test)


@pytest.fixture(scope="module")
def factor_image(built: dict[str, BuiltBento], demo_home: Path) -> Iterator[BuiltImage]:
    """The factor bento's image, built by buildah whatever engines the machine has."""
    image = build_image(built["factor"].tag, REGISTRY, env=demo_env(demo_home), use="buildah")
    try:
        yield image
    finally:
        remove_image(image.image, image.image.rsplit(":", 1)[0] + ":latest")


@pytest.fixture(scope="module")
def factor_container(factor_image: BuiltImage) -> Iterator[str]:
    name = f"tradeserve-test-{uuid.uuid4().hex[:8]}"
    container = new_container(factor_image.image, name)
    try:
        yield container
    finally:
        remove_container(container)


@pytest.fixture(scope="module")
def factor_served(
    factor_container: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """The image serving on a free port, its registry URI pointing at a closed port."""
    port = free_port()
    env = {"MLFLOW_TRACKING_URI": unreachable_registry()}
    log = tmp_path_factory.mktemp("factor-image") / "run.log"
    argv = run_argv("", port, env, factor_container)
    with ManagedProcess(
        "factor image", argv, env=dict(os.environ), log_path=log, port=port, ready="/readyz"
    ) as server:
        yield server


@needs_buildah
def test_factor_image_serves_the_baked_models_with_the_registry_unreachable(
    factor_served: ManagedProcess, built: dict[str, BuiltBento], demo_registry: Settings
):
    baked = {m.name: m.version for m in built["factor"].models}
    with bentoml.SyncHTTPClient(factor_served.url) as client:
        check_baked_factor_models(client, baked)


@needs_buildah
def test_factor_image_is_small_and_has_no_compiler_or_git(
    factor_image: BuiltImage, factor_container: str
):
    assert factor_image.builder == "buildah"
    assert factor_image.size_bytes <= MAX_FACTOR_IMAGE_BYTES, factor_image
    found = _run(factor_container, "command -v gcc cc git uv pip || true")
    assert found == "", found


@needs_buildah
def test_factor_image_installs_exactly_the_pinned_closure(
    factor_container: str, built: dict[str, BuiltBento]
):
    requirements = Path(built["factor"].path) / "env" / "python" / "requirements.txt"
    pinned = requirement_pins(requirements.read_text().splitlines())
    assert len(pinned) > 60  # the closure, not only the bentofile's top-level packages
    assert installed(factor_container) == pinned


@pytest.fixture(scope="module")
def composite_image(built: dict[str, BuiltBento], demo_home: Path) -> Iterator[BuiltImage]:
    """The composite's CPU image (RegimeBlend + Specialists), torch from this machine's
    wheelhouse; skipped where none offers a torch CPU wheel."""
    if torch_cpu_wheel() is None:
        pytest.skip("no torch CPU wheel reachable (pip config find-links / file:// index)")
    tag = built["regime_blend"].tag
    image = build_image(tag, REGISTRY, env=demo_env(demo_home), use="buildah")
    try:
        yield image
    finally:
        remove_image(image.image, image.image.rsplit(":", 1)[0] + ":latest")


@needs_buildah
def test_composite_image_predicts_like_the_bento_served_locally(
    composite_image: BuiltImage, built: dict[str, BuiltBento], demo_home: Path, tmp_path: Path
):
    bento = built["regime_blend"]
    market = demo_home / "market_data"
    answers = {}
    port = free_port()
    container = new_container(composite_image.image, f"tradeserve-test-{uuid.uuid4().hex[:8]}")
    try:
        env = {
            "MLFLOW_TRACKING_URI": unreachable_registry(),
            "TRADESERVE_BLEND_MARKET_DATA_DIR": "/market_data",
            "TRADESERVE_BLEND_STATE_DIR": "/tmp/blend-state",
        }
        argv = run_argv("", port, env, container, volumes=[f"{market}:/market_data:ro"])
        with ManagedProcess(
            "composite image", argv, env=dict(os.environ), log_path=tmp_path / "image.log",
            port=port, ready="/readyz", start_timeout=300,
        ) as server:  # fmt: skip
            answers["image"] = _predictions(server.url)
    finally:
        remove_container(container)
    local_env = offline_env(
        demo_home,
        BENTOML_CONFIG=str(Path(bento.path) / "src" / "configuration.yaml"),
        BENTOML_HOME=own_bentoml_home(demo_home, tmp_path),
        TRADESERVE_BLEND_MARKET_DATA_DIR=str(market),
        TRADESERVE_BLEND_STATE_DIR=str(tmp_path / "local-state"),
    )
    with bento_server(bento.tag, local_env, tmp_path / "local.log") as server:
        answers["local"] = _predictions(server.url)
    image, local = answers["image"], answers["local"]
    assert [a["action"] for a in image] == [a["action"] for a in local]
    for mine, theirs in zip(image, local, strict=True):
        assert mine["metadata"]["models"] == theirs["metadata"]["models"]
        assert mine["metadata"]["as_of"] == theirs["metadata"]["as_of"]
        for action in ACTIONS:
            np.testing.assert_allclose(
                mine["explanation"]["blended"][action],
                theirs["explanation"]["blended"][action],
                rtol=1e-5,
                atol=1e-6,
            )


def _predictions(url: str) -> list[dict]:
    """Decisions on a few bars, explained."""
    answers = []
    for day in ("2016-05-03", "2017-03-01", "2018-06-01"):
        # the verdict in the body: approvals reserve exposure, and the seed's default
        # answers a BUY past the limit with 403
        body = {"symbol": "SPX", "timestamp": day, "explain": True, "risk_mode": "body"}
        response = httpx.post(f"{url}/api/v1/predict", json=body, timeout=60)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


@pytest.mark.parametrize("target", ["chronos", "specialists", "regime_blend"])
def test_torch_bentos_have_a_cuda_dockerfile_and_a_cpu_one(
    built: dict[str, BuiltBento], target: str, tmp_path: Path
):
    """The CUDA Dockerfile (for Docker hosts) parses, names the CUDA base and torch's PyPI
    wheel; the CPU one rendered from the same bento names the slim base and the CPU wheel."""
    bento = Path(built[target].path)
    cuda = _instructions((bento / "env" / "docker" / "Dockerfile").read_text())
    assert cuda[0] == ("FROM", "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 as base-container")
    assert "torch==2.13.0" in (bento / "env" / "python" / "requirements.txt").read_text().split()
    context = tmp_path / "context"
    shutil.copytree(bento, context)
    cpu = _instructions(write_cpu_dockerfile(context).read_text())
    assert cpu[0] == ("FROM", "python:3.11-slim AS base-container")
    assert not any("nvidia" in args or "apt-get" in args for _, args in cpu)
    requirements = (context / "env" / "python" / "requirements.txt").read_text().split()
    assert "torch==2.13.0+cpu" in requirements


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuations joined; an unknown
    instruction fails the parse."""
    kept = [line for line in dockerfile.splitlines() if not line.strip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(kept))  # comments go first, as in Docker
    parsed = []
    for line in joined.splitlines():
        line = line.strip()
        if not line:
            continue
        keyword, _, args = line.partition(" ")
        assert keyword in INSTRUCTIONS, line
        parsed.append((keyword, " ".join(args.split())))
    return parsed


def _run(container: str, script: str) -> str:
    result = subprocess.run(
        ["buildah", "run", "--isolation", "chroot", container, "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()
