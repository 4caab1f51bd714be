"""Tabular family: any XGBoost or scikit-learn model logged with MLflow's own flavors under a
name of its owner's choosing, tagged ``family=tabular`` (N1V1's models), served by
``bentos/factor``. ``runtime`` is what serving needs; ``log`` and ``demo`` are training side.
"""
