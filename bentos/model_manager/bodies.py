"""The large answers (a version's payload, its ONNX file) encoded once, gzip included.

A payload is hundreds of KB of booster JSON, and gzip at level 9 (Starlette's default) costs
tens of ms of CPU for each: model_manager's clients would wait on compression, not on the
model. A version's payload and ONNX file never change, so both encodings are made once per
version and the request picks one by its ``Accept-Encoding``; the service's GZip middleware
leaves an answer that already has a ``Content-Encoding`` alone.
"""

from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

GZIP_LEVEL = 6
GZIP_MIN_BYTES = 1024  # model_manager's threshold
MAX_ENTRIES = 128


@dataclass(frozen=True)
class EncodedBody:
    identity: bytes
    gzip: bytes | None  # None: too small to be worth it


class BodyCache:
    """Encoded bodies by key (least recently used dropped past ``max_entries``)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._bodies: OrderedDict[Hashable, EncodedBody] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], bytes]) -> EncodedBody:
        with self._lock:
            found = self._bodies.get(key)
            if found is not None:
                self._bodies.move_to_end(key)
                return found
        content = make()
        compressed = gzip.compress(content, GZIP_LEVEL, mtime=0)
        body = EncodedBody(content, compressed if len(content) >= GZIP_MIN_BYTES else None)
        with self._lock:
            self._bodies[key] = body
            while len(self._bodies) > self._max_entries:
                self._bodies.popitem(last=False)
        return body


def encoded_response(
    request: Request, body: EncodedBody, media_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` gzip-compressed when the client accepts it, as it is otherwise."""
    all_headers = {**(headers or {}), "vary": "Accept-Encoding"}
    if body.gzip is not None and "gzip" in request.headers.get("accept-encoding", ""):
        all_headers["content-encoding"] = "gzip"
        return Response(body.gzip, media_type=media_type, headers=all_headers)
    return Response(body.identity, media_type=media_type, headers=all_headers)
