"""Optional API-key / Bearer authentication as an ASGI middleware.

The key is compared in constant time and never logged. Probes and metrics stay open so
orchestrators and scrapers work without the secret. The MLflow webhook cannot send the key
(MLflow sends no custom headers), so its path reaches its handler, which authenticates the
delivery by MLflow's signature instead (``bentos/shared/admin.py``).
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
# Paths whose handler authenticates every request itself (signature), key or not.
SELF_AUTHENTICATED_PATHS = frozenset({"/admin/webhook"})


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The key a request carries in ``X-API-Key`` or ``Authorization: Bearer``."""
    if key := headers.get(b"x-api-key"):
        return key.decode("latin-1")
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (length differences do not leak through timing either)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


class ApiKeyMiddleware:
    """Reject requests without the configured key with 401."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str,
        open_paths: frozenset[str] = OPEN_PATHS | SELF_AUTHENTICATED_PATHS,
    ):
        self.app = app
        self._api_key = api_key
        self._open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if key_matches(presented_key(headers), self._api_key):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"error": "missing or invalid API key: send X-API-Key or Authorization: Bearer"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="tradeserve"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
