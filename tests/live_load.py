"""What the live-promotion tests share: promoting like the MLflow UI does, and clients that
keep calling a served model while versions change under them."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Generic, Self, TypeVar

import httpx

from harness.wait import wait_until

A = TypeVar("A")


def set_alias_like_the_ui(tracking_url: str, name: str, version: str) -> None:
    """Point the ``champion`` alias of ``name`` at ``version`` through the UI's own REST call."""
    response = httpx.post(
        f"{tracking_url}/ajax-api/2.0/mlflow/registered-models/alias",
        json={"name": name, "alias": "champion", "version": version},
        timeout=30,
    )
    assert response.status_code == 200, response.text


class ContinuousLoad(Generic[A]):
    """Client threads calling a service back to back until stopped; every answer is kept.

    Subclasses say what one call is (:meth:`call`) and whether an answer failed.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[A] = []
        self.stop = threading.Event()

    def call(self, client: httpx.Client, rng: random.Random) -> A:
        raise NotImplementedError

    def failed(self, answer: A) -> bool:
        raise NotImplementedError

    def failures(self) -> list[A]:
        return [answer for answer in list(self.answers) if self.failed(answer)]

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                self.answers.append(self.call(client, rng))

    @contextlib.contextmanager
    def running(self, clients: int, first_answers: int, timeout: float) -> Iterator[Self]:
        """``clients`` threads calling until the block ends, once ``first_answers`` came."""
        threads = [threading.Thread(target=self.run, args=(seed,)) for seed in range(clients)]
        for thread in threads:
            thread.start()
        try:
            wait_until(
                lambda: len(self.answers) > first_answers,
                timeout=timeout,
                what="first answers under load",
            )
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)
