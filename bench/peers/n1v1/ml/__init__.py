# Vendored from https://github.com/Darellea/N1V1 (ml/__init__.py, commit 43e4117, 2025-10-10),
# MIT License (see ../LICENSE). Unchanged below this header; run by bench/n1v1_serving.py
# as N1V1's deploy/Dockerfile.ml-serving runs it (uvicorn ml.serving:app --workers 4).
"""
ML Module

This module contains machine learning components for the trading system.
"""

__version__ = "1.0.0"
