"""Turn tradeserve errors raised while serving a request into clean JSON 4xx responses.

BentoML renders its own exceptions with an odd body (a one-element list) and turns any
other exception into a 500; endpoints wrapped with :func:`client_errors` answer
``{"error": "<what to fix>"}`` with the error's ``http_status`` instead.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

from registry.errors import TradeserveError

F = TypeVar("F", bound=Callable[..., Any])


def error_response(error: TradeserveError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.http_status)


def client_errors(func: F) -> F:
    """Wrap a BentoML API method so tradeserve errors become their 4xx JSON response."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except TradeserveError as error:
                return error_response(error)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TradeserveError as error:
            return error_response(error)

    return wrapper  # type: ignore[return-value]
