"""Where a benchmark works: its registry, the environment of the servers it starts, and
BentoML configuration variants."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.bento import CONFIGURATION, REPO_ROOT

PYTHON = sys.executable

__all__ = [
    "CONFIGURATION",
    "PYTHON",
    "REPO_ROOT",
    "bench_env",
    "use_registry",
    "work_dir",
    "write_config",
]


def bench_env(home: Path, config: Path = CONFIGURATION, **extra: str) -> dict[str, str]:
    """Environment of a server process working on the bench registry in ``home``: none of
    the caller's MLflow or tradeserve settings leak in, only ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "TRADESERVE_"))
    }
    return {
        **env,
        "TRADESERVE_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_CONFIG": str(config),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def use_registry(home: Path) -> None:
    """Point this process's registry code at the embedded registry in ``home``."""
    from registry import store
    from registry.settings import get_settings

    os.environ["TRADESERVE_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key in [key for key in os.environ if key.startswith("MLFLOW_") and key.endswith("_URI")]:
        del os.environ[key]
    get_settings.cache_clear()
    store.configure()


def work_dir(path: Path | None, prefix: str) -> Path:
    """``path`` (created, kept: reused by later runs) or a fresh temporary folder."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_config(base: Path, overrides: Mapping[str, Any], out: Path) -> Path:
    """A copy of the BentoML configuration ``base`` with ``overrides`` deep-merged in."""

    def merge(into: dict, new: Mapping[str, Any]) -> dict:
        for key, value in new.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    config = yaml.safe_load(base.read_text()) or {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(merge(config, overrides), sort_keys=False))
    return out
