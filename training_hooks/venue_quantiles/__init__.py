"""Venue quantiles family: per-venue, per-symbol order-size (notional) thresholds, one
``thresholds.json`` per version of ``venue-quantiles-<venue>``. ``runtime`` is what serving
needs; ``log``, ``pickles`` (model_manager's pickle files) and ``demo`` are training side.
"""
