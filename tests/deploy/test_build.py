"""`tradeserve build`: promoted versions baked into one bento per family, plus the composite.

The bentos are built once per session from the demo registry by the real CLI
(tests/deploy/conftest.py); these tests read what it produced: bento.yaml, the BentoML
model store, the generated Dockerfiles and requirements.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from bentos.build import (
    REGISTRY_SERVICE_TARGETS,
    REPO_ROOT,
    RUNTIME_ENVS,
    TARGETS,
    BuildReport,
    bentofile_with_models,
    select_targets,
)
from bentos.model_store import ImportedModel, bentoml_model_name
from registry.catalog import list_models
from registry.errors import TradeserveError
from registry.resolve import resolve
from registry.settings import Settings
from tests.deploy.conftest import bento_info, run_build

FAMILY_BENTOFILES = [t.bentofile_path for t in TARGETS]
GPU_TARGETS = ("chronos", "specialists")
CUDA_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"


def test_one_bento_per_family_and_the_composite(built):
    assert set(built) == {t.key for t in TARGETS}
    assert set(built) == {"chronos", "factor", "specialists", "regime_blend", "model_manager"}


def test_bentos_carry_the_promoted_versions(built, demo_registry: Settings):
    promoted = {s.name: s for s in list_models() if s.version}
    for target in TARGETS:
        if target.key not in built:
            continue
        bento = built[target.key]
        families = {family.value for family in target.families}
        expected = {name: s.version for name, s in promoted.items() if s.family in families}
        assert {m.name: m.version for m in bento.models} == expected, target.key
        info = bento_info(bento)
        assert sorted(m["tag"] for m in info["models"]) == sorted(
            m.bentoml_tag for m in bento.models
        )
        for model in bento.models:
            assert info["labels"][f"model/{model.name}"] == f"v{model.version}"
            assert model.alias == "champion"


def test_stored_models_carry_registry_lineage(built, demo_home: Path, demo_registry: Settings):
    for model in {m.bentoml_tag: m for b in built.values() for m in b.models}.values():
        name, version = model.bentoml_tag.split(":")
        folder = demo_home / "bentoml" / "models" / name / version
        labels = yaml.safe_load((folder / "model.yaml").read_text())["labels"]
        resolved = resolve(model.name)
        assert labels == {
            "family": resolved.family.value,
            "registered_name": resolved.name,
            "registered_version": resolved.version,
            "alias": "champion",
            "stage": "Production",
            "run_id": resolved.run_id or "",
            "source_uri": resolved.source or "",
        }
        assert (folder / "mlflow_model" / "MLmodel").is_file()


def test_bentos_carry_their_runtime_configuration(built):
    for bento in built.values():
        envs = {env["name"]: env["value"] for env in bento_info(bento)["envs"]}
        # registry services (ModelManager) read and write the registry at run time
        source = "registry" if bento.target in REGISTRY_SERVICE_TARGETS else "bento"
        assert envs["TRADESERVE_MODEL_SOURCE"] == source, bento.target
        assert envs["BENTOML_CONFIG"] == "/home/bentoml/bento/src/configuration.yaml"
        packed = Path(bento.path) / "src" / "configuration.yaml"
        assert packed.read_text() == (REPO_ROOT / "configuration.yaml").read_text()
        dockerfile = (Path(bento.path) / "env" / "docker" / "Dockerfile").read_text()
        assert "ENV TRADESERVE_MODEL_SOURCE=$TRADESERVE_MODEL_SOURCE" in dockerfile
        assert "ARG BENTOML_CONFIG=/home/bentoml/bento/src/configuration.yaml" in dockerfile


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_gpu_images_use_cuda_and_torch(built, target: str):
    bento = Path(built[target].path)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^FROM {re.escape(CUDA_BASE)}", dockerfile, re.MULTILINE)
    # uv is put in before BentoML's `pip install uv` (the CUDA image has no pip).
    assert dockerfile.index("COPY --from=ghcr.io/astral-sh/uv:") < dockerfile.index("uv venv")
    assert "torch==2.13.0" in (bento / "env" / "python" / "requirements.txt").read_text()
    service = bento_info(built[target])["services"][0]
    assert service["config"]["resources"]["gpu"] == 1


def test_factor_image_is_slim_and_cpu_only(built):
    bento = Path(built["factor"].path)
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    assert "nvidia" not in dockerfile
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "xgboost-cpu==3.2.0" in requirements
    # nvidia-ml-py is BentoML's own pure-Python GPU probe, in every image; CUDA libraries
    # (nvidia-cublas-cu12, ...) and torch are not
    assert not re.search(r"^(torch|chronos|nvidia-(?!ml-py=))", requirements, re.MULTILINE)


def test_builds_do_not_lock_packages(built):
    for bento in built.values():
        python = Path(bento.path) / "env" / "python"
        assert not (python / "requirements.lock.txt").exists(), bento.target


def test_family_bentofiles_pin_what_the_project_pins():
    """Every bento package pin equals the project's (pyproject.toml, then constraints.txt)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines() + project["dependencies"]
    pins = {
        _normalized(name): version.strip()
        for name, version in (line.split("==", 1) for line in lines if "==" in line)
    }
    for path in FAMILY_BENTOFILES:
        config = yaml.safe_load(path.read_text())
        assert config["python"]["lock_packages"] is False, path
        for package in config["python"]["packages"]:
            name, version = package.split("==")
            assert pins.get(_normalized(name)) == version, f"{path}: {package}"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def test_rebuild_reuses_imported_models(built, demo_home: Path):
    result = run_build(demo_home, "--family", "factor")
    assert result.returncode == 0, result.stderr
    (again,) = BuildReport.model_validate_json(result.stdout).bentos
    assert all(model.reused for model in again.models)
    assert again.tag != built["factor"].tag
    assert [m.bentoml_tag for m in again.models] == [m.bentoml_tag for m in built["factor"].models]


def _build_fails(home: Path, *args: str) -> str:
    result = run_build(home, *args, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # (an empty embedded store may log MLflow's own table creation first)
    lines = [line for line in result.stderr.splitlines() if line.startswith("tradeserve: ")]
    assert len(lines) == 1, result.stderr
    assert not (home / "bentoml" / "bentos").exists() or not any(
        (home / "bentoml" / "bentos").iterdir()
    )
    return lines[0]


def test_unpromoted_or_missing_models_fail_the_build_in_one_line(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    client.create_registered_model("chronos-bolt-tiny", tags={"family": "chronos"})
    line = _build_fails(home, "--family", "chronos")
    assert "chronos-bolt-tiny" in line
    assert "tradeserve promote chronos-bolt-tiny" in line
    line = _build_fails(home, "--family", "factor")
    assert "the factor bento needs a promoted factor model" in line


def test_unknown_family_is_a_user_error():
    with pytest.raises(TradeserveError, match="unknown bento family nope"):
        select_targets(["nope"])
    assert [t.key for t in select_targets(["specialist", "composite"])] == [
        "specialists",
        "regime_blend",
    ]


def test_model_names_fit_bentoml_tags():
    assert bentoml_model_name("factor-SPX_ret_1d") == "factor-spx_ret_1d"
    assert bentoml_model_name("venue-quantiles-us-equities") == "venue-quantiles-us-equities"
    long_name = "factor-" + "X" * 80
    short = bentoml_model_name(long_name)
    assert len(short) <= 63
    assert re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", short)
    assert short != bentoml_model_name("factor-" + "X" * 79)


def test_generated_bentofile_adds_models_envs_and_no_locking(tmp_path: Path):
    bentofile = tmp_path / "bentofile.yaml"
    bentofile.write_text(
        "service: bentos.regime_blend.service:RegimeBlend\n"
        "python: {requirements_txt: ./constraints.txt}\n"
        "envs: [{name: BENTOML_CONFIG, value: /elsewhere.yaml}]\n"
    )
    model = ImportedModel(
        tag="regime-detector:v3", name="regime-detector", version="3", alias=None, reused=False
    )
    config = bentofile_with_models(bentofile, [model])
    assert config["models"] == [{"tag": "regime-detector:v3"}]
    assert config["labels"] == {"model/regime-detector": "v3"}
    assert config["python"] == {"requirements_txt": "./constraints.txt", "lock_packages": False}
    envs = {env["name"]: env["value"] for env in config["envs"]}
    assert envs == {
        "BENTOML_CONFIG": "/elsewhere.yaml",  # the bentofile's own value wins
        "TRADESERVE_MODEL_SOURCE": RUNTIME_ENVS["TRADESERVE_MODEL_SOURCE"],
    }
