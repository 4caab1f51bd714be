"""Chronos training hook: logging from every source, loading back, validation.

Models are random-weight "test"-size builds with the real configs of each family, so
they go through the same ``BaseChronosPipeline.from_pretrained`` path as published ones.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from chronos import BaseChronosPipeline
from mlflow.models import Model
from moto.server import ThreadedMotoServer
from safetensors import safe_open

from registry.runtime import FamilyRuntime
from registry.settings import Settings
from training_hooks.chronos import dtype as chronos_dtype
from training_hooks.chronos.builders import build_random_chronos
from training_hooks.chronos.demo import register_demo_chronos
from training_hooks.chronos.log import log_chronos
from training_hooks.chronos.runtime import ChronosRuntime, kind_of_name, quantile_key
from training_hooks.chronos.validation import (
    MIN_OBSERVATIONS,
    ChronosKind,
    ChronosSourceError,
    ForecastInputError,
)
from training_hooks.pyfunc import ARTIFACT_KEY
from training_hooks.registration import Lineage

pytestmark = pytest.mark.usefixtures("single_torch_thread")
NAMES: dict[ChronosKind, str] = {
    "t5": "chronos-t5-tiny",
    "bolt": "chronos-bolt-tiny",
    "chronos2": "chronos-2",
}
LEVELS = [0.1, 0.5, 0.9]
HORIZON = 12
NUM_SAMPLES = 16
SEED = 7
LINEAGE = Lineage(data_source="random-init")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[ChronosKind, Path]:
    root = tmp_path_factory.mktemp("chronos-models")
    return {kind: build_random_chronos(kind, "test", root / kind) for kind in NAMES}


@pytest.fixture(scope="module")
def runtimes(model_dirs: dict[ChronosKind, Path]) -> dict[ChronosKind, ChronosRuntime]:
    return {kind: ChronosRuntime.load(folder, {}) for kind, folder in model_dirs.items()}


def request_series() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    with_gap = 50.0 + rng.normal(size=60).cumsum()
    with_gap[[3, 17, 18, 40]] = np.nan  # missing values inside the series
    return [10.0 + np.sin(np.arange(80) / 3.0), with_gap, np.linspace(1.0, 2.0, 30)]


def request_frame() -> pd.DataFrame:
    series = request_series()
    return pd.DataFrame(
        {"item_id": ["sine", "walk", "ramp"], "target": [values.tolist() for values in series]}
    )


def request_params(kind: ChronosKind) -> dict[str, Any]:
    params: dict[str, Any] = {"prediction_length": HORIZON, "quantile_levels": LEVELS}
    if kind == "t5":
        params |= {"num_samples": NUM_SAMPLES, "seed": SEED}
    return params


def reference_forecast(folder: Path, kind: ChronosKind) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles [B,H,Q] and mean [B,H] straight from chronos on the original folder."""
    pipeline = BaseChronosPipeline.from_pretrained(folder, device_map="cpu", dtype=torch.float32)
    context = [torch.as_tensor(values, dtype=torch.float32) for values in request_series()]
    kwargs: dict[str, Any] = {}
    if kind == "t5":
        torch.manual_seed(SEED)
        kwargs["num_samples"] = NUM_SAMPLES
    quantiles, mean = pipeline.predict_quantiles(
        context, prediction_length=HORIZON, quantile_levels=LEVELS, **kwargs
    )
    if kind == "chronos2":
        quantiles, mean = torch.cat(quantiles), torch.cat(mean)
    return quantiles.numpy(), mean.numpy()


def frame_arrays(output: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles [B,H,Q] and mean [B,H] from a predict() frame."""
    quantiles = np.stack(
        [np.stack(output[quantile_key(level)].map(np.asarray)) for level in LEVELS], axis=-1
    )
    return quantiles, np.stack(output["mean"].map(np.asarray))


def logged_model_folder(model_uri: str) -> tuple[Path, dict[str, Any]]:
    """Download a logged version; return its Chronos artifact folder and model_config."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    flavor = Model.load(local).flavors["python_function"]
    return local / flavor["artifacts"][ARTIFACT_KEY]["path"], dict(flavor["config"])


def signature_defaults(model_uri: str) -> dict[str, Any]:
    params = mlflow.models.get_model_info(model_uri).signature.params
    return {param.name: param.default for param in params}


def assert_matches_reference(
    output: pd.DataFrame, reference: tuple[np.ndarray, np.ndarray]
) -> None:
    quantiles, mean = frame_arrays(output)
    np.testing.assert_allclose(quantiles, reference[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mean, reference[1], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", list(NAMES))
def test_logged_model_matches_chronos(
    kind: ChronosKind, model_dirs: dict[ChronosKind, Path], embedded_registry: Settings
) -> None:
    name = NAMES[kind]
    version = log_chronos(name, model_dirs[kind], lineage=LINEAGE, untrained=True)
    assert version.model_uri == f"models:/{name}/{version.version}"

    tags = mlflow.MlflowClient().get_model_version(name, version.version).tags
    assert tags["chronos_kind"] == kind
    assert tags["untrained"] == "true"
    assert tags["source"] == str(model_dirs[kind])
    assert tags["family"] == "chronos"
    assert tags["validation_status"] == "pending"

    defaults = {"prediction_length": 8, "quantile_levels": LEVELS}
    if kind == "t5":
        defaults |= {"num_samples": 20, "seed": 0}
    assert signature_defaults(version.model_uri) == defaults

    reference = reference_forecast(model_dirs[kind], kind)
    frame, params = request_frame(), request_params(kind)

    pyfunc_output = mlflow.pyfunc.load_model(version.model_uri).predict(frame, params=params)
    assert list(pyfunc_output["item_id"]) == ["sine", "walk", "ramp"]
    assert_matches_reference(pyfunc_output, reference)

    folder, model_config = logged_model_folder(version.model_uri)
    assert {path.name for path in folder.iterdir()} >= {"config.json", "model.safetensors"}
    assert model_config["kind"] == kind
    model_config.pop("family")
    runtime = ChronosRuntime.load(folder, model_config)
    assert ChronosRuntime.check_output(frame, runtime.predict(frame, params), params) == []
    assert_matches_reference(runtime.predict(frame, params), reference)

    batch = runtime.forecast(request_series(), HORIZON, LEVELS, NUM_SAMPLES, seed=SEED)
    np.testing.assert_allclose(batch.quantiles, reference[0], rtol=1e-6, atol=1e-6)
    assert (batch.samples is not None) == (kind == "t5")


def test_t5_seed_makes_samples_reproducible(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    runtime, series = runtimes["t5"], request_series()
    first = runtime.forecast(series, HORIZON, LEVELS, NUM_SAMPLES, seed=1)
    again = runtime.forecast(series, HORIZON, LEVELS, NUM_SAMPLES, seed=1)
    other = runtime.forecast(series, HORIZON, LEVELS, NUM_SAMPLES, seed=2)
    assert first.samples is not None and first.samples.shape == (3, NUM_SAMPLES, HORIZON)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.array_equal(first.samples, other.samples)


@pytest.mark.parametrize("kind", list(NAMES))
def test_forecast_shapes_and_nan_inside_series(
    kind: ChronosKind, runtimes: dict[ChronosKind, ChronosRuntime]
) -> None:
    runtime = runtimes[kind]
    batch = runtime.forecast(request_series(), HORIZON, [0.2, 0.5], seed=0)
    assert batch.quantiles.shape == (3, HORIZON, 2)
    assert batch.mean.shape == (3, HORIZON)
    assert np.isfinite(batch.quantiles).all() and np.isfinite(batch.mean).all()
    assert set(batch.row(1)) == {"mean", "0.2", "0.5"}


def test_runtime_describes_model(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    t5, bolt, chronos2 = runtimes["t5"], runtimes["bolt"], runtimes["chronos2"]
    assert (t5.kind, t5.context_length, t5.prediction_length, t5.quantile_levels) == (
        "t5",
        512,
        64,
        [],
    )
    assert (bolt.kind, bolt.context_length, bolt.prediction_length) == ("bolt", 2048, 64)
    assert bolt.quantile_levels == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert (chronos2.context_length, chronos2.prediction_length) == (8192, 1024)
    assert len(chronos2.quantile_levels) == 21
    assert {runtime.device for runtime in runtimes.values()} == {"cpu"}
    assert all(isinstance(runtime, FamilyRuntime) for runtime in runtimes.values())


# ``flags`` lines of real CPUs (/proc/cpuinfo, trimmed): Sapphire Rapids has AMX and
# AVX512-BF16; Ice Lake server has AVX-512 without bf16; Zen 3 has neither; a hypervisor may
# hide them behind lookalike names.
SAPPHIRE_RAPIDS = (
    "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
)
ICE_LAKE = "flags\t\t: fpu sse4_2 avx2 avx512f avx512dq avx512_vnni avx512_bitalg avx512_vpopcntdq"
ZEN3 = "flags\t\t: fpu sse4_2 avx2 fma bmi2 sha_ni vaes vpclmulqdq"
LOOKALIKE = "flags\t\t: fpu avx512f xavx512_bf16 amx_bf16x\nbugs\t\t: amx_bf16 avx512_bf16"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(SAPPHIRE_RAPIDS, True), (ICE_LAKE, False), (ZEN3, False), (LOOKALIKE, False), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool) -> None:
    processor = f"processor\t: 0\nmodel name\t: some cpu\n{cpuinfo}\n"
    assert chronos_dtype.native_cpu_bf16(processor) is native


def test_native_bf16_of_this_machine_matches_its_flags() -> None:
    text = Path("/proc/cpuinfo").read_text()
    flags = next(line for line in text.splitlines() if line.startswith("flags")).split()
    expected = "avx512_bf16" in flags or "amx_bf16" in flags
    assert chronos_dtype.native_cpu_bf16() is expected


def test_bf16_is_used_on_cpus_that_compute_it_natively(
    model_dirs: dict[ChronosKind, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chronos_dtype, "native_cpu_bf16", lambda: False)  # emulated: slower
    assert ChronosRuntime.load(model_dirs["bolt"], {"dtype": "bfloat16"}).dtype == torch.float32
    monkeypatch.setattr(chronos_dtype, "native_cpu_bf16", lambda: True)
    for kind in ("bolt", "chronos2"):
        full = ChronosRuntime.load(model_dirs[kind], {})
        half = ChronosRuntime.load(model_dirs[kind], {"dtype": "bfloat16"})
        assert half.dtype == torch.bfloat16
        assert next(half.pipeline.inner_model.parameters()).dtype == torch.bfloat16
        expected = full.forecast(request_series(), HORIZON, LEVELS)
        actual = half.forecast(request_series(), HORIZON, LEVELS)
        assert actual.quantiles.dtype == np.float32
        np.testing.assert_allclose(actual.quantiles, expected.quantiles, rtol=0.02)


def test_load_options(model_dirs: dict[ChronosKind, Path]) -> None:
    with pytest.raises(ChronosSourceError, match="unsupported Chronos dtype 'float16'"):
        ChronosRuntime.load(model_dirs["bolt"], {"dtype": "float16"})
    with pytest.raises(ChronosSourceError, match="holds a chronos bolt model, not t5"):
        ChronosRuntime.load(model_dirs["bolt"], {"kind": "t5"})
    runtime = ChronosRuntime.load(model_dirs["bolt"], {"allow_long_horizon": True})
    assert runtime.forecast(request_series(), 80, [0.5]).quantiles.shape == (3, 80, 1)


# ---------------------------------------------------------------------------- sources


def fake_hub_cache(cache: Path, repo_id: str, model_dir: Path) -> None:
    """The real hub cache layout: blobs, refs/main and a snapshot of symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in model_dir.iterdir():
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(Path("../../blobs") / blob.name)


def test_log_from_local_hugging_face_cache(
    tmp_path: Path,
    model_dirs: dict[ChronosKind, Path],
    embedded_registry: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "amazon/chronos-bolt-tiny", model_dirs["bolt"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    version = log_chronos("chronos-bolt-tiny", "amazon/chronos-bolt-tiny", lineage=LINEAGE)
    tags = mlflow.MlflowClient().get_model_version("chronos-bolt-tiny", version.version).tags
    assert (tags["source"], tags["untrained"]) == ("amazon/chronos-bolt-tiny", "false")

    shutil.rmtree(cache)  # the logged model must hold real files, not links into the cache
    output = mlflow.pyfunc.load_model(version.model_uri).predict(
        request_frame(), params=request_params("bolt")
    )
    assert_matches_reference(output, reference_forecast(model_dirs["bolt"], "bolt"))

    with pytest.raises(ChronosSourceError, match="not in the Hugging Face cache"):
        log_chronos("chronos-bolt-mini", "amazon/chronos-bolt-mini", lineage=LINEAGE)


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield endpoint
    server.stop()


def test_log_from_s3(
    s3_endpoint: str, model_dirs: dict[ChronosKind, Path], embedded_registry: Settings
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    for path in model_dirs["chronos2"].iterdir():
        s3.upload_file(str(path), "models", f"chronos/c2/{path.name}")
    s3.put_object(Bucket="models", Key="chronos/c2/pytorch_model.bin", Body=b"pickle")
    s3.put_object(Bucket="models", Key="chronos/c2-other/config.json", Body=b"{}")

    version = log_chronos(
        "chronos-2",
        "s3://models/chronos/c2",
        lineage=LINEAGE,
        prediction_length=4,
        quantile_levels=(0.05, 0.5),
    )
    folder, _ = logged_model_folder(version.model_uri)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "model.safetensors"]
    defaults = {"prediction_length": 4, "quantile_levels": [0.05, 0.5]}
    assert signature_defaults(version.model_uri) == defaults
    output = mlflow.pyfunc.load_model(version.model_uri).predict(request_frame(), params=None)
    assert list(output.columns) == ["item_id", "mean", "0.05", "0.5"]
    assert ChronosRuntime.check_output(request_frame(), output, defaults) == []
    tags = mlflow.MlflowClient().get_model_version("chronos-2", version.version).tags
    assert tags["source"] == "s3://models/chronos/c2"

    with pytest.raises(ChronosSourceError, match=r"no config\.json"):
        log_chronos("chronos-2", "s3://models/nothing-here", lineage=LINEAGE)
    with pytest.raises(ChronosSourceError, match="cannot read s3://missing-bucket"):
        log_chronos("chronos-2", "s3://missing-bucket/x", lineage=LINEAGE)


def test_rejects_unusable_sources(tmp_path: Path, model_dirs: dict[ChronosKind, Path]) -> None:
    """Each of these fails before anything touches the registry."""
    with pytest.raises(ChronosSourceError, match="needs a bolt model"):
        log_chronos("chronos-bolt-tiny", model_dirs["t5"], lineage=LINEAGE)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copyfile(model_dirs["t5"] / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ChronosSourceError, match="never loads pickled weights"):
        log_chronos("chronos-t5-tiny", pickled, lineage=LINEAGE)
    with pytest.raises(ChronosSourceError, match="not a local folder"):
        log_chronos("chronos-t5-tiny", tmp_path / "missing" / "dir", lineage=LINEAGE)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([], "target is empty"),
        ([1.0, 2.0, np.inf, 3.0, 4.0, 5.0], "infinite value at position 2"),
        ([np.nan] * 10, "no observed values"),
        ([1.0, 2.0, np.nan, 3.0, 4.0], f"4 observed values; at least {MIN_OBSERVATIONS}"),
        (["a", "b", "c", "d", "e"], "must be a list of numbers"),
        ([[1.0, 2.0]] * 5, r"multivariate targets \(a list of lists\) need a Chronos-2 model"),
        ([1.0, 2.0, 3.0, 4.0, 5.0, -1e300], r"has -1e\+300 at position 5, beyond \+-1e\+15"),
    ],
)
def test_rejects_bad_series(
    target: list[Any], message: str, runtimes: dict[ChronosKind, ChronosRuntime]
) -> None:
    frame = pd.DataFrame({"item_id": ["ok", "bad"], "target": [[1.0] * 10, target]})
    with pytest.raises(ForecastInputError, match=message) as raised:
        runtimes["bolt"].predict(frame, {"prediction_length": 4})
    assert "series 'bad' (row 1)" in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("bolt", {"prediction_length": 65}, "exceeds the native horizon 64"),
        ("chronos2", {"prediction_length": 1025}, "exceeds the native horizon 1024"),
        ("t5", {"prediction_length": 0}, "greater than or equal to 1"),
        ("t5", {"quantile_levels": [0.0, 0.5]}, "strictly between 0 and 1"),
        ("chronos2", {"quantile_levels": [0.5, 1.2]}, "strictly between 0 and 1"),
        ("bolt", {"quantile_levels": [0.05, 0.5]}, r"outside \[0.1, 0.9\].*trained on"),
        ("chronos2", {"quantile_levels": [0.005]}, r"outside \[0.01, 0.99\]"),
        ("bolt", {"quantile_levels": [0.5, 0.5]}, "duplicates"),
        ("bolt", {"quantile_levels": []}, "at least 1 item"),
        ("t5", {"num_samples": 5000}, "num_samples must be between 1 and 1000"),
        ("bolt", {"quantiles": [0.5]}, "quantiles: Extra inputs are not permitted"),
    ],
)
def test_rejects_bad_params(
    kind: ChronosKind,
    params: dict[str, Any],
    message: str,
    runtimes: dict[ChronosKind, ChronosRuntime],
) -> None:
    with pytest.raises(ForecastInputError, match=message):
        runtimes[kind].predict(request_frame(), params)


def test_accepts_what_each_model_can_answer(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    series = request_series()
    assert runtimes["t5"].forecast(series, 4, [0.01, 0.99], num_samples=8).quantiles.shape == (
        3,
        4,
        2,
    )
    assert runtimes["chronos2"].forecast(series, 4, [0.05, 0.95]).quantiles.shape == (3, 4, 2)
    # interpolated between trained levels
    assert runtimes["bolt"].forecast(series, 4, [0.25, 0.75]).quantiles.shape == (3, 4, 2)
    # past the native horizon only when explicitly allowed
    long = runtimes["bolt"].forecast(series, 70, [0.5], allow_long_horizon=True)
    assert long.quantiles.shape == (3, 70, 1)
    # sampling parameters are ignored by quantile models
    assert runtimes["bolt"].forecast(series, 4, num_samples=3, seed=1).samples is None


def test_missing_target_column(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    with pytest.raises(ForecastInputError, match="needs a 'target' column"):
        runtimes["bolt"].predict(pd.DataFrame({"item_id": ["a"], "values": [[1.0] * 8]}))


def test_check_output_reports_problems(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    frame, params = request_frame(), {"prediction_length": 4, "quantile_levels": [0.5]}
    output = runtimes["bolt"].predict(frame, params)
    assert ChronosRuntime.check_output(frame, output, params) == []
    assert ChronosRuntime.check_output(frame, output.iloc[:2], params) == ["expected 3 rows, got 2"]

    broken = output.drop(columns=["0.5"])
    broken.at[0, "mean"] = [1.0, 2.0]
    broken.at[1, "mean"] = [1.0, np.nan, 1.0, 1.0]
    assert ChronosRuntime.check_output(frame, broken, params) == [
        "missing column '0.5'",
        "row 0 'mean': 2 steps, expected 4",
        "row 1 'mean': non-finite values",
    ]


# ---------------------------------------------------------------------------- builders and names


def test_builder_is_deterministic_with_real_config(tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    first = build_random_chronos("bolt", "test", tmp_path / "a", seed=3)
    second = build_random_chronos("bolt", "test", tmp_path / "b", seed=3)
    third = build_random_chronos("bolt", "test", tmp_path / "c", seed=4)
    assert digest(first) == digest(second) != digest(third)

    tiny = build_random_chronos("t5", "tiny", tmp_path / "t5-tiny")
    with safe_open(tiny / "model.safetensors", framework="pt") as weights:
        count = sum(np.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    assert 8.0e6 < count < 8.8e6  # chronos-t5-tiny: 8M parameters
    assert (tiny / "generation_config.json").is_file()

    with pytest.raises(ValueError, match="no 'large' size for chronos bolt"):
        build_random_chronos("bolt", "large", tmp_path / "d")


def test_kind_of_name() -> None:
    assert [kind_of_name(name) for name in NAMES.values()] == list(NAMES)
    assert kind_of_name("chronos-t5-large") == "t5"


@pytest.mark.slow
def test_register_demo_chronos(embedded_registry: Settings, tmp_path: Path) -> None:
    versions = register_demo_chronos("tiny", workdir=tmp_path / "demo")
    assert [version.name for version in versions] == [
        "chronos-t5-tiny",
        "chronos-bolt-tiny",
        "chronos-2",
    ]
    client = mlflow.MlflowClient()
    for version in versions:
        tags = client.get_model_version(version.name, version.version).tags
        assert tags["untrained"] == "true"
        assert tags["data_source"] == "random-init"
    assert client.get_model_version("chronos-2", "1").tags["architecture"] == "chronos2-small"


# ---------------------------------------------------------------------------- Chronos-2 inputs


def chronos2_inputs() -> list[Any]:
    """Chronos-2 inputs of three schemas: a plain series; two with a numeric and a
    categorical covariate, the latter known into the future; a multivariate target."""
    rng = np.random.default_rng(3)

    def walk(length: int) -> np.ndarray:
        return 20.0 + rng.normal(size=length).cumsum()

    def with_covariates(length: int) -> dict[str, Any]:
        return {
            "target": walk(length),
            "past_covariates": {
                "rate": rng.normal(size=length),
                "session": rng.choice(["asia", "us"], size=length),
            },
            "future_covariates": {"session": rng.choice(["asia", "eu"], size=HORIZON)},
        }

    multivariate = {"target": np.stack([walk(35), walk(35)]), "past_covariates": {"x": walk(35)}}
    return [walk(50), with_covariates(40), with_covariates(30), multivariate]


def test_chronos2_forecasts_each_input_schema_as_its_own_call(
    runtimes: dict[ChronosKind, ChronosRuntime],
) -> None:
    runtime, inputs = runtimes["chronos2"], chronos2_inputs()
    items = [item if isinstance(item, dict) else {"target": item} for item in inputs]
    batch = runtime.forecast(
        [item["target"] for item in items],
        HORIZON,
        LEVELS,
        past_covariates=[item.get("past_covariates") for item in items],
        future_covariates=[item.get("future_covariates") for item in items],
    )
    assert batch.quantiles.shape == (5, HORIZON, 3)  # the multivariate series has two rows
    assert batch.variates == (None, None, None, 2)
    # What the pipeline answers when called once per schema.
    for indices in ([0], [1, 2], [3]):
        quantiles, _ = runtime.pipeline.predict_quantiles(
            [inputs[i] for i in indices], prediction_length=HORIZON, quantile_levels=LEVELS
        )
        for index, expected in zip(indices, quantiles, strict=True):
            np.testing.assert_allclose(
                batch.quantiles[batch.rows(index)], expected.numpy(), rtol=1e-5, atol=1e-5
            )
    assert np.asarray(batch.row(3)["0.5"]).shape == (2, HORIZON)
    assert np.asarray(batch.row(1)["0.5"]).shape == (HORIZON,)


COVARIATE_TARGET = np.linspace(1.0, 2.0, 20)


@pytest.mark.parametrize(
    ("kind", "past", "future", "message"),
    [
        ("bolt", {"x": [1.0] * 20}, None, r"covariates need a Chronos-2 model \('chronos-2'\)"),
        ("t5", None, {"x": [1.0] * 4}, "covariates need a Chronos-2 model"),
        ("chronos2", {"x": [1.0] * 19}, None, r"past covariate 'x' has 19 values; it needs 20"),
        ("chronos2", {"x": [1.0] * 20}, {"x": [1.0] * 5}, r"has 5 values; it needs 4 \(prediction"),
        ("chronos2", {"x": [1.0] * 20}, {"y": [1.0] * 4}, r"\['y'\] have no past values"),
        ("chronos2", {"x": [1.0] * 19 + [np.inf]}, None, "infinite value at position 19"),
        ("chronos2", {"x": [1.0] * 19 + [1e20]}, None, r"1e\+20 at position 19, beyond"),
        ("chronos2", {"x": ["a"] * 19 + [1.0]}, None, r"mixes strings and other values \(1.0\)"),
        ("chronos2", {"x": ["a"] * 20}, {"x": [1.0] * 4}, "numeric but its past values are categ"),
        ("chronos2", {"x": [1.0] * 20}, {"x": ["a"] * 4}, "categorical but its past values are nu"),
        ("chronos2", {"": [1.0] * 20}, None, "names must not be empty"),
    ],
)
def test_rejects_bad_covariates(
    kind: ChronosKind,
    past: dict[str, Any] | None,
    future: dict[str, Any] | None,
    message: str,
    runtimes: dict[ChronosKind, ChronosRuntime],
) -> None:
    with pytest.raises(ForecastInputError, match=message):
        runtimes[kind].validate(
            [COVARIATE_TARGET], 4, LEVELS, past_covariates=[past], future_covariates=[future]
        )


def test_missing_covariate_values_keep_their_kind(
    runtimes: dict[ChronosKind, ChronosRuntime],
) -> None:
    checked = runtimes["chronos2"].validate(
        [COVARIATE_TARGET],
        4,
        LEVELS,
        past_covariates=[{"x": ["a", None] * 10, "y": [None] * 20}],
        future_covariates=[{"x": [None] * 4}],
    )
    assert checked.past_covariates[0]["x"].dtype == object
    assert np.isnan(checked.past_covariates[0]["y"]).all()
    assert checked.future_covariates[0]["x"].dtype == object  # all missing, still categorical


def test_groups_keep_chronos2_schemas_apart(runtimes: dict[ChronosKind, ChronosRuntime]) -> None:
    from bentos.chronos.batching import group_tasks
    from bentos.chronos.schemas import SeriesTask

    by_name = {NAMES[kind]: runtime for kind, runtime in runtimes.items()}
    target = COVARIATE_TARGET.tolist()

    def task(model: str = "chronos-2", **extra: Any) -> SeriesTask:
        fields = {"target": target, "prediction_length": 4, "quantile_levels": LEVELS}
        return SeriesTask(model=model, **(fields | extra))

    numeric, categorical = {"x": [1.0] * 20}, {"x": ["a"] * 20}
    tasks = [
        task(),
        task(past_covariates=numeric),
        task(),
        task(past_covariates=categorical),
        task(past_covariates=numeric),
        task(past_covariates=numeric, future_covariates={"x": [2.0] * 4}),
        task(target=[target, target], past_covariates=numeric),
        task(target=[target, target], past_covariates=categorical),
        task(target=[target, target], past_covariates=categorical),
        task(model="chronos-bolt-tiny", prediction_length=2),
        task(model="chronos-bolt-tiny"),
    ]
    groups = [sorted(group.indices) for group in group_tasks(tasks, by_name.__getitem__)]
    assert sorted(groups) == [[0, 2], [1, 4], [3], [5], [6], [7], [8], [9, 10]]
