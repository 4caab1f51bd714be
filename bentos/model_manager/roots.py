"""The operator's roots: the only folders the HTTP API may read artifacts and pickles from.

model_manager read any path a caller named. Here ``root_path`` and ``pkl_path`` must lie
under ``TRADESERVE_MODEL_ROOTS`` (symlinks resolved first, so a link out of a root is
outside it); pickles additionally need a trusted directory (``registry.trust``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from registry.errors import TradeserveError

ROOTS_ENV = "TRADESERVE_MODEL_ROOTS"


class OutsideRootsError(TradeserveError):
    """A path outside every configured root was named."""

    http_status = 403


def require_under_roots(raw: str, roots: Sequence[Path], what: str) -> Path:
    """``raw`` resolved, if it lies under one of ``roots``; else :class:`OutsideRootsError`."""
    resolved = Path(raw.strip()).expanduser().resolve()
    if not roots:
        raise OutsideRootsError(
            f"{what} {resolved} refused: no folder may be read through the API until the "
            f"operator sets {ROOTS_ENV}"
        )
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise OutsideRootsError(f"{what} {resolved} is outside {ROOTS_ENV} ({allowed})")
    return resolved
