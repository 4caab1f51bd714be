"""Which pickles tradeserve may read: only files inside the operator's trusted directories.

Unpickling runs arbitrary code, so model_manager's ``.pkl`` files (models, training info,
venue quantile tables) are read only from ``TRADESERVE_TRUSTED_PICKLE_DIRS``
(``os.pathsep``-separated); symlinks are resolved first, so a link out of a trusted
directory is not trusted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from registry.errors import TradeserveError
from registry.settings import Settings

TRUSTED_DIRS_ENV = "TRADESERVE_TRUSTED_PICKLE_DIRS"


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
