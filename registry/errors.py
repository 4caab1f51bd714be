"""User-facing errors: each carries a message that says what to fix.

``http_status`` is what a service answers when the error reaches a request: client
mistakes are 4xx, an unreachable registry is 503.
"""

from typing import ClassVar


class TradeserveError(Exception):
    """Base class for errors a user can act on; the CLI prints them as one line."""

    http_status: ClassVar[int] = 400


class RegistryUnavailableError(TradeserveError):
    """The MLflow tracking/registry server cannot be reached."""

    http_status = 503


class ModelNotFoundError(TradeserveError):
    """A registered model or version does not exist (or is not served)."""

    http_status = 404


class NotPromotedError(TradeserveError):
    """A registered model has no promoted version."""

    http_status = 404


class GateError(TradeserveError):
    """A candidate version failed the promotion gate; nothing was changed."""

    http_status = 422


class InvalidModelNameError(TradeserveError):
    """A registered-model name does not follow the naming of its family."""
