"""Specialist family: small PyTorch policy networks (``specialist-<role>``) mapping one
feature row to HOLD/BUY/SELL probabilities, served by ``bentos/specialists`` and blended by
``bentos/regime_blend``. ``runtime`` is what serving needs; ``datasets``, ``train``, ``log``
and ``demo`` are training side.
"""
