"""FactorModels without pandas on the response path — to measure a proposed change.

Not a service of its own: this module makes ``FactorRuntime.output_frame`` return a plain
``{column: numpy array}`` mapping (what ``FactorModels.predict`` reads from it: iteration
over column names and ``output[column]``) instead of building a pandas DataFrame per
request, then re-exports FactorModels, so ``bentoml serve
bench.factor_fastpath:FactorModels`` is the same service with only that step changed.
Predictions are identical (same arrays, same float conversion).
"""

from __future__ import annotations

import numpy as np

import bentos.factor.service as factor_service
from training_hooks.factor import FactorRuntime

_pandas_output_frame = FactorRuntime.output_frame


def _numpy_output_frame(self: FactorRuntime, raw: np.ndarray, index=None):
    if index is not None:  # callers that want a frame (pyfunc predict) keep pandas
        return _pandas_output_frame(self, raw, index)
    if self.objective == "binary:logistic":
        proba = np.column_stack([1.0 - raw, raw])
    elif self.objective == "multi:softprob":
        proba = np.asarray(raw).reshape(len(raw), -1)
    else:
        return {"prediction": np.asarray(raw, dtype=float)}
    columns = {f"proba_{k}": proba[:, k].astype(float) for k in range(proba.shape[1])}
    return {"prediction": proba.argmax(axis=1), **columns}


FactorRuntime.output_frame = _numpy_output_frame  # type: ignore[method-assign]
FactorModels = factor_service.FactorModels
