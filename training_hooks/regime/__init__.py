"""Regime family: the ``regime-detector``, a Gaussian HMM fitted offline (hmmlearn) and
forward-filtered online in numpy, feeding ``bentos/regime_blend``. ``runtime`` is what
serving needs (no hmmlearn, no scipy); ``train``, ``log`` and ``demo`` are training side.
"""
