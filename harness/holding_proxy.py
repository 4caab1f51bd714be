"""A reverse proxy in front of a real server, like an ingress, that can hold requests.

Tests use it to make an outage land at an exact moment: :meth:`HoldingProxy.hold` the
requests of one download (a fragment of their path), wait until one is held
(:attr:`arrived`), stop the real server, then :meth:`release`: the request is forwarded to a
closed port and answered ``502 Bad Gateway``, as an ingress answers for a dead backend.
Everything else is forwarded as is.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.ports import LOCALHOST, free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class HoldingProxy:
    """Forwards ``http://127.0.0.1:<port>`` to ``upstream_port``; a context manager."""

    def __init__(self, upstream_port: int, hold_limit_s: float = 300) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.hold_limit_s = hold_limit_s
        self.arrived = threading.Event()  # a request was held since the last hold()
        self._held: str | None = None
        self._released = threading.Event()
        self._released.set()
        self._server = ThreadingHTTPServer((LOCALHOST, self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def hold(self, fragment: str) -> None:
        """Hold every request whose path (query included) contains ``fragment``, e.g. the
        id of one model's artifact folder, until :meth:`release`."""
        self._released.clear()
        self.arrived.clear()
        self._held = fragment

    def release(self) -> None:
        self._held = None
        self._released.set()

    def __enter__(self) -> HoldingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                held = proxy._held
                if held is not None and held in self.path:
                    proxy.arrived.set()
                    proxy._released.wait(proxy.hold_limit_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                connection = http.client.HTTPConnection(LOCALHOST, proxy.upstream_port, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    upstream = connection.getresponse()
                    status, reason = upstream.status, upstream.reason
                    answer_headers = upstream.getheaders()
                    payload = upstream.read()
                except OSError as error:
                    status, reason, answer_headers = 502, "Bad Gateway", []
                    payload = f"upstream unreachable: {error}".encode()
                finally:
                    connection.close()
                self.send_response(status, reason)
                for key, value in answer_headers:
                    if key.lower() not in HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
