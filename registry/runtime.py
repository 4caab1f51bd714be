"""The contract between a model family and everything that loads it.

A family runtime is the native, pickle-free form of a logged model: it is built from the
files of one artifact folder plus a JSON-able config, and answers ``predict`` on a pandas
frame. The MLflow pyfunc adapter, the promotion gate and the BentoML services all load
models through these classes (found by :func:`registry.families.runtime_class`), so a model
behaves the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import pandas as pd

from registry.families import Family


@runtime_checkable
class FamilyRuntime(Protocol):
    """What every family's runtime class provides."""

    family: ClassVar[Family]

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Build the runtime from its artifact folder (no pickle) on ``device``."""
        ...

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run the model on a frame shaped like the logged input example."""
        ...

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Family-specific problems with ``output`` for input ``frame``; empty means valid."""
        ...
