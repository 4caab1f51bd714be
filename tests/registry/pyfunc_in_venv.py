"""Run by ``test_portable_pyfunc.py`` with the clean venv's Python (``python -P``): load each
model with ``mlflow.pyfunc.load_model`` from the registry, predict on its logged input
example, and write the output (Parquet) and where its runtime's code came from (JSON).

Usage: ``python -P pyfunc_in_venv.py MODELS_JSON OUT_DIR``; MODELS_JSON maps a file stem to
a model URI. Only MLflow and the models' logged requirements are importable here.
"""

import inspect
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd


def as_frame(output: object, rows: int) -> pd.DataFrame:
    """The pyfunc's output as a frame (native flavors answer arrays)."""
    if isinstance(output, pd.DataFrame):
        return output
    values = np.asarray(output).reshape(rows, -1)
    return pd.DataFrame(values, columns=[str(k) for k in range(values.shape[1])])


def main(models_json: str, out_dir: str) -> None:
    out = Path(out_dir)
    report = {}
    for stem, uri in json.loads(Path(models_json).read_text()).items():
        model = mlflow.pyfunc.load_model(uri)
        example = model.input_example
        as_frame(model.predict(example), len(example)).to_parquet(out / f"{stem}.parquet")
        try:  # the tradeserve pyfunc; native flavors (XGBoost, scikit-learn) have none
            runtime = type(model.unwrap_python_model().runtime)
        except mlflow.exceptions.MlflowException:
            runtime = None
        report[stem] = {"runtime_file": runtime and inspect.getfile(runtime)}
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
