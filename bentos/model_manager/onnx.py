"""ONNX files of served factor versions: converted once per version, kept in the registry.

The first request for a version converts its booster with onnxmltools (input ``input``,
float32 ``[1, feature_dim]``, as model_manager did), checks the ONNX model against the
booster on fixed random rows with onnxruntime (a conversion that disagrees is refused, never
served), logs it as ``onnx/model.onnx`` in the version's logged-model artifacts and tags the
version with its sha256. Later requests (in any process) download that file; this one keeps
it in memory.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from pathlib import Path

import mlflow
import numpy as np
import xgboost as xgb
from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, ConfigDict

from bentos.shared.lineage import ModelRef
from registry import store
from registry.errors import TradeserveError
from registry.model_metrics import logged_model_id
from training_hooks.factor.runtime import FactorRuntime

logger = logging.getLogger("tradeserve.model_manager.onnx")
ONNX_FOLDER = "onnx"
ONNX_FILE = "model.onnx"
ONNX_SHA_TAG = "onnx_sha256"
INPUT_NAME = "input"
CHECK_ROWS = 64
TOLERANCE = 1e-5


class OnnxConversionError(TradeserveError):
    """The booster cannot be served as ONNX (unsupported objective, or outputs differ)."""

    http_status = 422


class OnnxModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: ModelRef
    content: bytes
    sha256: str


class OnnxModels:
    """ONNX bytes per served version (thread-safe: one conversion per version)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], OnnxModel] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, ref: ModelRef, runtime: FactorRuntime) -> OnnxModel:
        key = key_of(ref)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._cache.get(key)
            if cached is None:
                content = self._stored(ref) or self._convert_and_store(ref, runtime)
                cached = OnnxModel(
                    ref=ref, content=content, sha256=hashlib.sha256(content).hexdigest()
                )
                self._cache[key] = cached
        return cached

    def _stored(self, ref: ModelRef) -> bytes | None:
        """The ONNX file logged for this version before (checked against its tag)."""
        version = _model_version(ref)
        expected = version.tags.get(ONNX_SHA_TAG)
        model_id = logged_model_id(version)
        if not expected or not model_id:
            return None
        with tempfile.TemporaryDirectory() as folder, store.translate_errors():
            location = store.client().get_logged_model(model_id).artifact_location
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location}/{ONNX_FOLDER}/{ONNX_FILE}", dst_path=folder
            )
            content = Path(path).read_bytes()
        if hashlib.sha256(content).hexdigest() != expected:
            logger.warning("%s v%s: stored ONNX file differs from its tag; converting again",
                           ref.name, ref.version)  # fmt: skip
            return None
        return content

    def _convert_and_store(self, ref: ModelRef, runtime: FactorRuntime) -> bytes:
        content = convert(runtime.booster)
        model_id = logged_model_id(_model_version(ref))
        if model_id is None:  # a version registered from a run (MLflow 2): kept in memory only
            logger.warning("%s v%s: no logged model to keep the ONNX file in", *key_of(ref))
            return content
        client = store.client()
        with tempfile.TemporaryDirectory() as folder, store.translate_errors():
            path = Path(folder) / ONNX_FILE
            path.write_bytes(content)
            client.log_model_artifact(model_id, str(path), ONNX_FOLDER)
            client.set_model_version_tag(
                ref.name, ref.version, ONNX_SHA_TAG, hashlib.sha256(content).hexdigest()
            )
        logger.info("%s v%s: converted to ONNX (%d bytes)", ref.name, ref.version, len(content))
        return content


def convert(booster: xgb.Booster) -> bytes:
    """The booster as an ONNX model, verified against XGBoost to :data:`TOLERANCE`."""
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    unnamed = booster.copy()  # onnxmltools reads features as f0, f1, ... only
    unnamed.feature_names = None
    unnamed.feature_types = None
    dim = unnamed.num_features()
    try:
        model = convert_xgboost(unnamed, initial_types=[(INPUT_NAME, FloatTensorType([1, dim]))])
    except (RuntimeError, ValueError, NotImplementedError, KeyError) as error:
        raise OnnxConversionError(f"cannot convert this booster to ONNX: {error}") from error
    content = model.SerializeToString()
    check(content, unnamed)
    return content


def check(content: bytes, booster: xgb.Booster) -> None:
    """Raise unless the ONNX model predicts what the booster predicts on fixed rows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    rows = np.random.default_rng(0).normal(size=(CHECK_ROWS, booster.num_features()))
    rows = rows.astype(np.float32)
    expected = np.asarray(booster.inplace_predict(rows), dtype=np.float64)
    got = np.stack([onnx_output(session.run(None, {INPUT_NAME: row[None, :]})) for row in rows])
    if expected.ndim == 1 and got.ndim == 2 and got.shape[1] == 2:
        got = got[:, 1]  # binary classifier: P(class 1), what the booster returns
    got = got.reshape(expected.shape)
    worst = float(np.max(np.abs(got - expected)))
    if not np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE):
        raise OnnxConversionError(
            f"the ONNX conversion differs from the booster by up to {worst:.3g}; not served"
        )


def onnx_output(outputs: list[np.ndarray]) -> np.ndarray:
    """The numeric prediction of one ONNX call: the regression value, or the classifier's
    probabilities (its last output)."""
    return np.asarray(outputs[-1], dtype=np.float64).reshape(-1)


def key_of(ref: ModelRef) -> tuple[str, str]:
    return ref.name, ref.version


def _model_version(ref: ModelRef) -> ModelVersion:
    with store.translate_errors(f"version {ref.version} of model '{ref.name}'"):
        return store.client().get_model_version(ref.name, ref.version)
