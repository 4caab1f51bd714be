"""Keep-alive connections are closed after ``TRADESERVE_MAX_REQUESTS_PER_CONNECTION``
responses (so clients reconnect to a free worker), on a real ``bentoml serve``."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bento import BentoServer
from tests.services.conftest import serve_demo

MAX_REQUESTS = 4


@pytest.fixture(scope="module")
def recycling_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.specialists.service:Specialists",
        demo_home,
        tmp_path_factory.mktemp("recycling"),
        TRADESERVE_MAX_REQUESTS_PER_CONNECTION=str(MAX_REQUESTS),
    )


def models_request(port: int) -> bytes:
    return (
        f"POST /models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    ).encode()


def test_a_connection_is_closed_with_its_last_allowed_response(
    recycling_server: BentoServer,
) -> None:
    port = recycling_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        answers = []
        for _ in range(MAX_REQUESTS):
            sock.sendall(models_request(port))
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 200 and response.read()
            answers.append(response.getheader("connection"))
        assert answers[:-1] == [None] * (MAX_REQUESTS - 1)  # kept alive until the last
        assert answers[-1] == "close"
        assert sock.recv(1) == b""  # and the server closed it


def test_clients_reconnect_and_every_request_is_answered(recycling_server: BentoServer) -> None:
    client = http.client.HTTPConnection("127.0.0.1", recycling_server.port, timeout=30)
    local_ports = []
    for _ in range(3 * MAX_REQUESTS):
        client.request("POST", "/models", body=b"{}", headers={"Content-Type": "application/json"})
        assert client.sock is not None
        local_ports.append(client.sock.getsockname()[1])
        response = client.getresponse()
        assert response.status == 200 and response.read()
    client.close()
    # one connection per MAX_REQUESTS requests, each used for exactly that many
    assert [local_ports.count(p) for p in dict.fromkeys(local_ports)] == [MAX_REQUESTS] * 3
