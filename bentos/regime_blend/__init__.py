"""RegimeBlend: regime-aware blending of specialist policies into risk-checked decisions.

The decision logic (``blending``, ``sizing``, ``risk``, ``decision``) is plain Python with no
BentoML import, so the evaluator (``bentos.regime_blend.evaluate``) runs exactly the code the
service runs.
"""
