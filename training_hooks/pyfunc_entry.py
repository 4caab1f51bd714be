"""Models-from-code entry point logged with every tradeserve pyfunc model.

MLflow runs this file from the model folder after putting the model's ``code/`` (its
``code_paths``: the adapter, the family runtime and the registry core they import) first on
``sys.path``. The first model loaded in a process provides ``registry`` and
``training_hooks`` (or tradeserve itself, where it is installed and already imported); a
model of another family loaded next brings modules the first one did not ship, so its
``code/`` is added to those packages' search paths here.
"""

from pathlib import Path

import mlflow

import registry
import training_hooks

_CODE = Path(__file__).with_name("code")
for _package in (registry, training_hooks):
    _own = str(_CODE / _package.__name__)
    if Path(_own).is_dir() and _own not in _package.__path__:
        _package.__path__.append(_own)

from training_hooks.pyfunc import TradeservePyfunc  # noqa: E402 (after the paths are set)

mlflow.models.set_model(TradeservePyfunc())
