"""Refuse a multipart request without a boundary with 400 before BentoML sees it.

BentoML 1.4 parses a ``multipart/form-data`` body of an API endpoint with Starlette, whose
``HTTPException(400, "Missing boundary in multipart.")`` lands in BentoML's catch-all and is
answered 500 (found by schemathesis on every service). Such a body cannot be parsed by
anyone, so it is refused here, for every route.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


class MissingBoundaryMiddleware:
    """400 for ``multipart/*`` requests whose content type names no boundary."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            content_type = dict(scope["headers"]).get(b"content-type", b"").lower()
            if content_type.startswith(b"multipart/") and b"boundary=" not in content_type:
                await _refuse(send)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send) -> None:
    body = json.dumps({"error": "a multipart body needs a boundary in its content type"})
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
