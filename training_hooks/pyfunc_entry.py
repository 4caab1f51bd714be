"""Models-from-code entry point logged with every tradeserve pyfunc model."""

import mlflow

from training_hooks.pyfunc import TradeservePyfunc

mlflow.models.set_model(TradeservePyfunc())
