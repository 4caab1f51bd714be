"""Portable models (issue #17): every demo model loads with ``mlflow.pyfunc.load_model`` in a
fresh virtual environment that holds only MLflow and the models' logged requirements (no
tradeserve), and answers what tradeserve serves: the Specialists service over HTTP, every
other family's runtime in process (what its service runs).

One venv for all the models (the union of their requirements), built with ``uv`` from the
package sources pip is configured with (``pip config list``, translated for uv) and uv's
cache, which later runs reuse. Measured on the 2-core dev machine: the venv in 13 s on a
cold uv cache and 2.5 s on a warm one; the whole module in about 4 minutes, most of it the
demo registry that the session builds once for every area.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bentoml
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.models import Model

from harness.bento import REPO_ROOT, BentoServer
from registry.families import Family, family_spec
from registry.loading import load_version
from registry.resolve import ResolvedVersion, resolve
from registry.settings import Settings
from registry.trust import trusting_sklearn_pickles
from tests.demo_fixtures import demo_env
from tests.services.conftest import serve_demo
from tests.unit.test_layout import is_training
from training_hooks.portable import (
    CONSTRAINTS_FILE,
    code_modules,
    model_dependencies,
    module_file,
)
from training_hooks.pyfunc import ARTIFACT_KEY, ENTRY_FILE
from training_hooks.registration import Lineage, register_logged_model
from training_hooks.venue_quantiles.runtime import THRESHOLDS_FILE, SymbolThresholds, VenueTable

pytestmark = pytest.mark.slow

UV = Path(sys.executable).with_name("uv")
VENV_SCRIPT = Path(__file__).with_name("pyfunc_in_venv.py")
# pip's settings (``pip config list`` keys) and the uv variables that mean the same.
PIP_TO_UV = {
    "index-url": "UV_DEFAULT_INDEX",
    "extra-index-url": "UV_INDEX",
    "find-links": "UV_FIND_LINKS",
    "constraint": "UV_CONSTRAINT",
    "cert": "SSL_CERT_FILE",
    "default-timeout": "UV_HTTP_TIMEOUT",
}


@dataclass(frozen=True)
class DemoModel:
    """A champion of the demo registry, downloaded."""

    name: str
    version: str
    family: Family
    model_dir: Path

    @property
    def stem(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)

    @property
    def mlmodel(self) -> Model:
        return Model.load(str(self.model_dir))

    @property
    def from_code(self) -> bool:
        """Logged as the tradeserve pyfunc (models from code), not a native flavor."""
        return "model_code_path" in self.mlmodel.flavors["python_function"]


@dataclass(frozen=True)
class VenvRun:
    """The clean venv and what its pyfuncs answered."""

    python: Path
    env: dict[str, str]
    outputs: Path
    report: dict[str, dict[str, str | None]]

    def output(self, model: DemoModel) -> pd.DataFrame:
        return pd.read_parquet(self.outputs / f"{model.stem}.parquet")


@pytest.fixture(scope="module")
def demo_models(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> list[DemoModel]:
    """Every champion of the demo registry, downloaded with the plain MLflow client."""
    uri = Settings(home=demo_home).embedded_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    root = tmp_path_factory.mktemp("portable-models")
    models = []
    for registered in client.search_registered_models():
        version = client.get_model_version_by_alias(registered.name, "champion")
        destination = root / registered.name
        destination.mkdir()
        source = client.get_model_version_download_uri(registered.name, version.version)
        model_dir = download_artifacts(
            artifact_uri=source, dst_path=str(destination), tracking_uri=uri
        )
        models.append(
            DemoModel(
                name=registered.name,
                version=str(version.version),
                family=Family(registered.tags["family"]),
                model_dir=Path(model_dir),
            )
        )
    return sorted(models, key=lambda model: model.name)


def uv_environment() -> dict[str, str]:
    """pip's index, wheelhouse, constraints and certificate settings as uv variables, so uv
    installs from exactly what pip would (a CPU-only torch wheel included)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = {"UV_INDEX_STRATEGY": "unsafe-best-match"}  # pip picks the best match of all sources
    for line in listed.splitlines():  # "global.find-links='/opt/wheels'", ":env:.cert='...'"
        key, _, value = line.partition("=")
        setting = key.rpartition(".")[2]
        if setting in PIP_TO_UV:
            env[PIP_TO_UV[setting]] = ast.literal_eval(value)
    return env


@pytest.fixture(scope="module")
def venv_run(
    demo_home: Path, demo_models: list[DemoModel], tmp_path_factory: pytest.TempPathFactory
) -> VenvRun:
    """A venv with only the union of the models' logged requirements, and each model's
    answer to its input example there (``pyfunc_in_venv.py``)."""
    root = tmp_path_factory.mktemp("portable-venv")
    venv = root / "venv"
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith(("PIP_", "UV_"))
    }
    uv_env = {**base, **uv_environment()}
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, venv], env=uv_env, check=True)
    python = venv / "bin" / "python"
    requirements = [arg for m in demo_models for arg in ("-r", m.model_dir / "requirements.txt")]
    installed = subprocess.run(
        [UV, "pip", "install", "-q", "--python", python, *requirements],
        env=uv_env,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    env = {
        **demo_env(demo_home),
        "MLFLOW_TRACKING_URI": Settings(home=demo_home).embedded_tracking_uri,
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    for variable in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(variable, None)
    outputs = root / "outputs"
    outputs.mkdir()
    models_json = root / "models.json"
    models_json.write_text(
        json.dumps({m.stem: f"models:/{m.name}/{m.version}" for m in demo_models})
    )
    ran = subprocess.run(
        [python, "-P", VENV_SCRIPT, models_json, outputs],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stderr[-5000:]
    report = json.loads((outputs / "report.json").read_text())
    return VenvRun(python=python, env=env, outputs=outputs, report=report)


def project_pins() -> dict[str, str]:
    """The project's exact pins: pyproject.toml's dependencies, then constraints.txt."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines() + project["dependencies"]
    return {
        _normalized(name): version.split("#")[0].strip().strip('",')
        for name, version in (line.split("==", 1) for line in lines if "==" in line)
    }


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).strip().lower()


def logged_pins(model: DemoModel) -> tuple[list[str], list[str]]:
    """The lines of the model's requirements.txt and of its constraints file."""
    requirements = (model.model_dir / "requirements.txt").read_text().split()
    constraints = (model.model_dir / CONSTRAINTS_FILE).read_text().split()
    return [line for line in requirements if "==" in line], constraints


# ── the logged model ─────────────────────────────────────────────────────────────────


def test_requirements_follow_what_the_shipped_code_imports() -> None:
    """A runtime's own lazy import is a requirement (Chronos loads ``chronos`` on load); a
    shared helper's is not (market data's demo loader imports ``arch``)."""

    def requirements(family: Family) -> set[str]:
        runtime = family_spec(family).runtime.split(":")[0]
        with model_dependencies(modules=["training_hooks.pyfunc", runtime]) as dependencies:
            *pins, constraints = dependencies.pip_requirements
            assert constraints.startswith("-c ") and Path(constraints[3:]).is_file()
        return {pin.split("==")[0] for pin in pins}

    assert {"mlflow", "chronos-forecasting", "torch"} <= requirements(Family.CHRONOS)
    regime = requirements(Family.REGIME)
    assert "training_hooks.market_data" in code_modules(["training_hooks.regime.runtime"])
    assert not {"arch", "torch", "pyarrow"} & regime
    assert {"mlflow", "pandas", "numpy", "pydantic"} <= regime


def test_every_family_of_the_demo_is_checked(demo_models: list[DemoModel]) -> None:
    families = {model.family for model in demo_models}
    assert families == set(Family), f"demo models cover {sorted(families)} only"


def test_logged_requirements_are_the_project_pins(demo_models: list[DemoModel]) -> None:
    pins = project_pins()
    for model in demo_models:
        requirements, constraints = logged_pins(model)
        assert "-c" in (model.model_dir / "requirements.txt").read_text(), model.name
        named = {_normalized(line.split("==")[0]) for line in requirements}
        assert "mlflow" in named and "pandas" in named, model.name
        for line in requirements + constraints:
            name, version = line.split("==")
            if _normalized(name) in pins:  # pip itself and setuptools are not project pins
                assert pins[_normalized(name)] == version, f"{model.name}: {line}"
    chronos = next(m for m in demo_models if m.family == Family.CHRONOS)
    requirements, constraints = logged_pins(chronos)
    assert {"torch==2.13.0", "chronos-forecasting==2.3.2"} <= set(requirements)
    assert f"transformers=={project_pins()['transformers']}" in constraints


def test_pyfuncs_ship_exactly_the_code_their_runtime_imports(
    demo_models: list[DemoModel],
) -> None:
    from_code = [m for m in demo_models if m.from_code]
    assert {m.family for m in from_code} == {
        Family.CHRONOS,
        Family.SPECIALIST,
        Family.REGIME,
        Family.VENUE_QUANTILES,
    }
    for model in from_code:
        runtime_module = family_spec(model.family).runtime.split(":")[0]
        modules = code_modules(["training_hooks.pyfunc", runtime_module])
        assert not [module for module in modules if is_training(module)], model.name
        expected = {str(module_file(module).relative_to(REPO_ROOT)) for module in modules}
        code = model.model_dir / "code"
        shipped = {str(path.relative_to(code)) for path in code.rglob("*.py")}
        assert shipped == expected, model.name
    native = [m for m in demo_models if not m.from_code]
    assert native and not [m.name for m in native if (m.model_dir / "code").exists()]


def test_a_version_logged_without_code_loads_as_the_services_load_it(
    embedded_registry: Settings, tmp_path: Path
) -> None:
    """Versions logged before the pyfuncs carried their code (no ``code_paths``, MLflow's
    own requirement only) still serve: services load a version's artifacts with the family
    runtime (:mod:`registry.loading`), never through ``mlflow.pyfunc.load_model``."""
    table = VenueTable(
        venue="legacy",
        symbols={
            "BTCUSDT": SymbolThresholds(medium_notional_threshold=1e4, large_notional_threshold=5e4)
        },
    )
    folder = tmp_path / "table"
    folder.mkdir()
    (folder / THRESHOLDS_FILE).write_text(table.model_dump_json())
    example = pd.DataFrame({"symbol": ["BTCUSDT"]})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="legacy",
            python_model=str(ENTRY_FILE),
            artifacts={ARTIFACT_KEY: str(folder)},
            model_config={"family": Family.VENUE_QUANTILES.value},
            input_example=example,
            pip_requirements=["mlflow"],
        )
    registered = register_logged_model(
        info,
        name="venue-quantiles-legacy",
        family=Family.VENUE_QUANTILES,
        lineage=Lineage(data_source="test"),
    )
    assert Model.load(info.model_uri).flavors["python_function"]["code"] is None
    resolved = ResolvedVersion(
        name=registered.name, version=registered.version, family=registered.family, alias=None
    )
    answer = load_version(resolved).runtime.predict(example)
    assert answer["large_notional_threshold"].tolist() == [5e4]


# ── the clean venv ───────────────────────────────────────────────────────────────────


def test_the_venv_has_no_tradeserve_and_a_cpu_torch(venv_run: VenvRun) -> None:
    for module in ("training_hooks", "registry", "bentos"):
        probe = subprocess.run(
            [venv_run.python, "-c", f"import {module}"],
            env=venv_run.env,
            cwd=venv_run.outputs,
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    listed = subprocess.run(
        [UV, "pip", "list", "--python", venv_run.python, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {_normalized(p["name"]): p["version"] for p in json.loads(listed)}
    assert "tradeserve" not in installed
    assert installed["torch"] == "2.13.0+cpu"
    assert not [name for name in installed if name.startswith("nvidia")]


def test_pyfuncs_run_the_runtime_code_logged_with_them(
    venv_run: VenvRun, demo_models: list[DemoModel]
) -> None:
    for model in demo_models:
        runtime_file = venv_run.report[model.stem]["runtime_file"]
        if not model.from_code:
            assert runtime_file is None, model.name
            continue
        package = family_spec(model.family).package
        assert runtime_file, model.name
        assert runtime_file.endswith(f"/code/training_hooks/{package}/runtime.py"), runtime_file
        assert not runtime_file.startswith(str(REPO_ROOT)), runtime_file


@pytest.mark.parametrize("family", [f for f in Family if f != Family.SPECIALIST])
def test_the_venv_answers_as_the_family_runtime(
    family: Family, venv_run: VenvRun, demo_models: list[DemoModel], demo_registry: Settings
) -> None:
    models = [m for m in demo_models if m.family == family]
    assert models
    for model in models:
        resolved = resolve(model.name)
        assert resolved.version == model.version
        with trusting_sklearn_pickles():  # the demo's own RandomForest
            loaded = load_version(resolved)
        example = loaded.input_example()
        assert example is not None
        params = model.mlmodel.signature.params
        defaults = {spec.name: spec.default for spec in params.params} if params else None
        expected = loaded.runtime.predict(example, defaults)
        got = venv_run.output(model)
        if model.from_code:
            assert_same_frame(got, expected, model.name)
        else:  # native flavors answer the raw prediction the runtime names `prediction`
            assert_same_column(got["0"], expected["prediction"], model.name)


def test_the_venv_answers_as_the_specialists_service(
    venv_run: VenvRun,
    demo_models: list[DemoModel],
    specialists_service: BentoServer,
    demo_registry: Settings,
) -> None:
    specialists = [m for m in demo_models if m.family == Family.SPECIALIST]
    assert specialists
    with bentoml.SyncHTTPClient(specialists_service.url) as client:
        for model in specialists:
            loaded = load_version(resolve(model.name))
            example = loaded.input_example()
            observations = example[list(loaded.runtime.feature_names)].to_numpy(np.float32)
            role = model.name.removeprefix("specialist-")
            body = client.act(observations=observations.tolist(), specialists=[role])
            served = body["results"][role]
            assert served["model"]["version"] == model.version
            got = venv_run.output(model)
            assert list(got.columns) == body["action_order"]
            np.testing.assert_allclose(
                got.to_numpy(), served["probabilities"], rtol=1e-5, atol=1e-6, err_msg=model.name
            )


@pytest.fixture(scope="module")
def specialists_service(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.specialists.service:Specialists", demo_home, tmp_path_factory.mktemp("specialists")
    )


# ── comparing answers ────────────────────────────────────────────────────────────────


def assert_same_frame(got: pd.DataFrame, expected: pd.DataFrame, name: str) -> None:
    assert list(got.columns) == list(expected.columns), name
    assert len(got) == len(expected), name
    for column in expected.columns:
        assert_same_column(got[column], expected[column], f"{name}[{column}]")


def assert_same_column(got: pd.Series, expected: pd.Series, name: str) -> None:
    """Numbers (and lists of numbers, Chronos' forecasts) equal within float tolerance;
    anything else (labels, dates) exactly."""
    try:
        want = np.stack([np.asarray(value, dtype=np.float64) for value in expected])
    except (TypeError, ValueError):
        assert got.tolist() == expected.tolist(), name
        return
    have = np.stack([np.asarray(value, dtype=np.float64) for value in got])
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6, err_msg=name)
