"""Waiting without blind sleeps: poll a predicate, probe a URL, read a log's tail."""

from __future__ import annotations

import http.client
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Exceptions of the types in ``ignore`` count as "not yet" (the last one is chained to the
    timeout error); any other exception propagates at once, which lets a predicate fail fast,
    e.g. when the process it waits for has died.

    Raises:
        TimeoutError: naming ``what`` when ``timeout`` seconds pass without success.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as error:
            last_error = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}") from (
                last_error
            )
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2) -> bool:
    """True when ``GET url`` answers 200 (no proxies; a refused connection is False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, 4xx/5xx
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
