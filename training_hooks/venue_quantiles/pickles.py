"""model_manager's quantiles pickles (``order_quantiles.pkl``) read safely.

:func:`load_quantiles_pickle` only reads pickles that sit inside a directory the operator
trusts (``TRADESERVE_TRUSTED_PICKLE_DIRS``) and even then only accepts plain containers and
numbers; :func:`parse_quantiles` normalises what it finds to ``{symbol: SymbolThresholds}``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registry.trust import require_trusted
from training_hooks.venue_quantiles.runtime import InvalidQuantilesError, SymbolThresholds

# What a quantiles pickle may reference: numbers (numpy scalars included) in containers.
_SAFE_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "float"),
    ("builtins", "int"),
    ("builtins", "str"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}


class _NumbersUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise InvalidQuantilesError(
                f"quantiles pickle references {module}.{name}; only dicts/lists of numbers "
                "are accepted"
            )
        return super().find_class(module, name)


def load_quantiles_pickle(
    path: Path, trusted_dirs: Sequence[Path] | None = None
) -> dict[str, SymbolThresholds]:
    """Parse a model_manager ``order_quantiles.pkl`` (only inside a trusted directory).

    Accepts ``{symbol: {low, high}}``, ``{symbol: {medium_notional_threshold,
    large_notional_threshold}}`` or a list of such dicts with a ``symbol`` key; ``low`` is
    the medium threshold and ``high`` the large one (model_manager's normalisation).
    ``trusted_dirs`` defaults to ``TRADESERVE_TRUSTED_PICKLE_DIRS``.
    """
    resolved = require_trusted(Path(path), trusted_dirs)
    try:
        raw = _NumbersUnpickler(io.BytesIO(resolved.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise InvalidQuantilesError(f"{resolved} is not a readable pickle: {error}") from error
    return parse_quantiles(raw, source=str(resolved))


def parse_quantiles(raw: Any, source: str = "quantiles") -> dict[str, SymbolThresholds]:
    """Normalise model_manager's quantile structures to ``{symbol: SymbolThresholds}``."""
    if isinstance(raw, Mapping):
        items = [(str(symbol), value) for symbol, value in raw.items()]
    elif isinstance(raw, list | tuple):
        items = [(_symbol_of(entry, source), entry) for entry in raw]
    else:
        raise InvalidQuantilesError(
            f"{source}: expected a dict by symbol or a list of dicts, got {type(raw).__name__}"
        )
    return {symbol: _thresholds(symbol, value, source) for symbol, value in items}


def _symbol_of(entry: Any, source: str) -> str:
    if not isinstance(entry, Mapping) or not entry.get("symbol"):
        raise InvalidQuantilesError(f"{source}: every list entry needs a 'symbol' key: {entry!r}")
    return str(entry["symbol"])


def _thresholds(symbol: str, value: Any, source: str) -> SymbolThresholds:
    if not isinstance(value, Mapping):
        raise InvalidQuantilesError(f"{source}: {symbol} maps to {type(value).__name__}")
    medium = value.get("medium_notional_threshold", value.get("low"))
    large = value.get("large_notional_threshold", value.get("high"))
    if medium is None or large is None:
        raise InvalidQuantilesError(
            f"{source}: {symbol} needs low/high or medium_notional_threshold/"
            f"large_notional_threshold, got keys {sorted(map(str, value))}"
        )
    try:
        return SymbolThresholds(
            medium_notional_threshold=float(medium), large_notional_threshold=float(large)
        )
    except (TypeError, ValueError) as error:
        raise InvalidQuantilesError(f"{source}: {symbol}: {error}") from error
