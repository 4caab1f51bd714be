"""MLflow side of tradeserve: configuration, naming, resolution, promotion and the CLI."""

from registry.errors import TradeserveError
from registry.families import Family
from registry.settings import Settings, get_settings

__all__ = ["Family", "Settings", "TradeserveError", "get_settings"]
