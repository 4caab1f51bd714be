"""Apply the shared request protections (size limit, optional API key) and connection
recycling to a service."""

from __future__ import annotations

import os
from typing import TypeVar

from bentos.shared.auth import ApiKeyMiddleware
from bentos.shared.connections import RecycleConnectionsMiddleware
from bentos.shared.limits import RequestSizeLimitMiddleware
from bentos.shared.malformed import MissingBoundaryMiddleware
from bentos.shared.settings import get_serving_settings

S = TypeVar("S")

# BentoML's HTTP clients (the in-process proxy a service uses to reach its own batched
# endpoints, and proxies to dependencies) send this token as a Bearer header.
_CLIENT_TOKEN_ENV = "BENTO_CLOUD_API_KEY"


def protect(service: S) -> S:
    """Add the size limit, the multipart check, connection recycling and, when
    ``TRADESERVE_API_KEY`` is set, API-key auth."""
    settings = get_serving_settings()
    if settings.max_requests_per_connection > 0:  # 0: connections are never recycled
        service.add_asgi_middleware(  # type: ignore[attr-defined]
            RecycleConnectionsMiddleware, max_requests=settings.max_requests_per_connection
        )
    service.add_asgi_middleware(MissingBoundaryMiddleware)  # type: ignore[attr-defined]
    service.add_asgi_middleware(  # type: ignore[attr-defined]
        RequestSizeLimitMiddleware, max_bytes=settings.max_request_bytes
    )
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
        os.environ.setdefault(_CLIENT_TOKEN_ENV, key)
        service.add_asgi_middleware(ApiKeyMiddleware, api_key=key)  # type: ignore[attr-defined]
    return service
