"""Factor family: XGBoost boosters over an ordered list of named factors (model_manager's
models), logged with MLflow's native xgboost flavor and served by ``bentos/factor``.
``runtime`` is what serving needs; ``log``, ``train`` and ``demo`` are training side.
"""
