"""Which pickles tradeserve may read: only what the operator said to trust.

Unpickling runs arbitrary code, so model_manager's ``.pkl`` files (models, training info,
venue quantile tables) are read only from ``TRADESERVE_TRUSTED_PICKLE_DIRS``
(``os.pathsep``-separated); symlinks are resolved first, so a link out of a trusted
directory is not trusted.

scikit-learn models in the registry (``tabular`` family) are pickles too (skops files name
their own allowed types, and tree models need the unchecked ``Tree`` type): they are loaded
only with ``TRADESERVE_ALLOW_SKLEARN_PICKLES=true``, from a registry listed in
``TRADESERVE_TRUSTED_PICKLE_REGISTRIES``, or inside :func:`trusting_sklearn_pickles` (code
loading a model it has just written itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from registry.errors import TradeserveError
from registry.settings import Settings, get_settings

TRUSTED_DIRS_ENV = "TRADESERVE_TRUSTED_PICKLE_DIRS"
ALLOW_SKLEARN_ENV = "TRADESERVE_ALLOW_SKLEARN_PICKLES"
TRUSTED_REGISTRIES_ENV = "TRADESERVE_TRUSTED_PICKLE_REGISTRIES"
_TRUSTED_HERE: ContextVar[bool] = ContextVar("tradeserve_trusted_sklearn", default=False)


class SklearnTrust(BaseSettings):
    """The operator's opt-in to scikit-learn pickles (environment prefix ``TRADESERVE_``)."""

    model_config = SettingsConfigDict(env_prefix="TRADESERVE_", extra="ignore")

    allow_sklearn_pickles: bool = Field(
        default=False,
        description="Load scikit-learn models (pickles: loading one runs its code) wherever "
        "they come from.",
    )
    trusted_pickle_registries: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated MLflow registry URIs whose scikit-learn models may be "
        "loaded: whoever can write to them can run code in the services.",
    )

    @field_validator("trusted_pickle_registries", mode="before")
    @classmethod
    def _split_uris(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value


class UntrustedPickleError(TradeserveError):
    """A pickle outside the operator's trusted directories was about to be read."""


class MissingPickleError(TradeserveError):
    """The pickle to read does not exist."""


def trusted_pickle_dirs() -> list[Path]:
    """Directories from ``TRADESERVE_TRUSTED_PICKLE_DIRS`` (``os.pathsep``-separated)."""
    return Settings().trusted_pickle_dirs


def is_trusted(path: Path, trusted_dirs: Sequence[Path] | None = None) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside one of ``trusted_dirs``."""
    dirs = trusted_pickle_dirs() if trusted_dirs is None else trusted_dirs
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(Path(d).expanduser().resolve()) for d in dirs)


def require_trusted(path: Path, trusted_dirs: Sequence[Path] | None = None) -> Path:
    """The resolved ``path`` if it may be unpickled, else :class:`UntrustedPickleError`."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise MissingPickleError(f"{resolved} does not exist or is not a file")
    if not is_trusted(resolved, trusted_dirs):
        raise UntrustedPickleError(
            f"refusing to unpickle {resolved}: it is not inside a trusted directory; add its "
            f"directory to {TRUSTED_DIRS_ENV} if you trust whoever wrote it"
        )
    return resolved


def current_registry_uri() -> str:
    """The registry this process loads models from."""
    settings = get_settings()
    return (settings.registry_uri or settings.effective_tracking_uri).rstrip("/")


def sklearn_pickles_allowed() -> bool:
    """Whether scikit-learn models may be loaded here (see the module doc)."""
    trust = SklearnTrust()
    return (
        _TRUSTED_HERE.get()
        or trust.allow_sklearn_pickles
        or current_registry_uri() in trust.trusted_pickle_registries
    )


def require_sklearn_trust(what: str) -> None:
    """Raise :class:`UntrustedPickleError` saying how to opt in, unless allowed."""
    if not sklearn_pickles_allowed():
        raise UntrustedPickleError(
            f"refusing to load {what}: scikit-learn models are pickles, and loading one runs "
            f"whatever code it holds. Set {ALLOW_SKLEARN_ENV}=true, or add this registry "
            f"({current_registry_uri()}) to {TRUSTED_REGISTRIES_ENV}, if you trust whoever "
            "can write to it"
        )


@contextlib.contextmanager
def trusting_sklearn_pickles() -> Iterator[None]:
    """Trust scikit-learn models loaded in this block (this thread): for code that loads a
    model it has just written itself, such as the demo promoting its own forest."""
    token = _TRUSTED_HERE.set(True)
    try:
        yield
    finally:
        _TRUSTED_HERE.reset(token)
