"""A real headless Chromium for tests of JavaScript pages (the MLflow UI): what a user sees.

The MLflow UI is a single-page app: the HTML the server sends is empty until the app has
fetched the registry and rendered. ``--virtual-time-budget`` lets the page run that long in
virtual time (which stands still while requests are in flight), then ``--dump-dom`` prints
the rendered DOM; :func:`page_text` reduces it to the text a user reads.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from html.parser import HTMLParser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """The Chromium (or Chrome) executable on PATH, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def rendered_dom(url: str, *, budget_ms: int = 20_000, timeout: float = 180) -> str:
    """The DOM of ``url`` after its scripts ran ``budget_ms`` of virtual time."""
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("no Chromium on PATH (Debian package: chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests run as root in containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"chromium exited {done.returncode} rendering {url}: {tail}")
    return done.stdout


def page_text(url: str, until: Callable[[str], bool], *, attempts: int = 3) -> str:
    """The visible text of ``url`` once ``until(text)`` holds; each further attempt gives
    the app twice the virtual time. Returns the last text when it never holds."""
    text = ""
    budget_ms = 15_000
    for _ in range(attempts):
        text = visible_text(rendered_dom(url, budget_ms=budget_ms))
        if until(text):
            break
        budget_ms *= 2
    return text


def visible_text(html: str) -> str:
    """The text of ``html`` outside scripts and styles, whitespace collapsed."""
    parser = _TextParser()
    parser.feed(html)
    return " ".join(" ".join(parser.chunks).split())


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "noscript"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)
