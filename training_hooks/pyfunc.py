"""One MLflow pyfunc for every pickle-free family: a thin adapter over its runtime.

Models are logged "from code" (``pyfunc_entry.py``), so loading them executes that small
file instead of unpickling an object; the weights stay plain files (safetensors, JSON). This
module travels with each model, with its family's runtime, as ``code_paths``
(:mod:`training_hooks.portable`): keep its imports to the registry core and the runtimes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel
from mlflow.pyfunc.model import PythonModelContext as PythonContext

from registry.families import runtime_class
from registry.runtime import FamilyRuntime

ARTIFACT_KEY = "model"
ENTRY_FILE = Path(__file__).with_name("pyfunc_entry.py")


class TradeservePyfunc(PythonModel):
    """Dispatches to the runtime named by ``model_config["family"]``."""

    runtime: FamilyRuntime

    def load_context(self, context: PythonContext) -> None:
        config = dict(context.model_config or {})
        family = config.pop("family")
        device = config.pop("device", "cpu")
        self.runtime = runtime_class(family).load(
            Path(context.artifacts[ARTIFACT_KEY]), config, device=device
        )

    def predict(
        self,
        context: PythonContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.runtime.predict(model_input, params)
