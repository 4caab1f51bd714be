"""Results of a benchmark: what it ran on, JSON + Markdown files, the table in README.md."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.bento import REPO_ROOT

BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    packages = ("bentoml", "mlflow", "torch", "chronos-forecasting", "xgboost-cpu", "fastapi")
    for package in (*packages, "uvicorn", "uvloop", "httptools"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def git_commit(folder: Path = REPO_ROOT, mark_changes: bool = False) -> str:
    """The short commit checked out in ``folder`` ('' outside git); with ``mark_changes``,
    ``+changes`` when tracked files differ from it (the code measured is not the commit)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    if mark_changes and commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    return commit


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "python_executable": sys.executable,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory, 1),
        "kernel": platform.release(),
        "git_commit": git_commit(),
        "versions": versions(),
    }


def write_results(name: str, result: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """``bench/results/<name>.json`` and ``.md``; the table also goes into bench/README.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(json_path)
    md_path.write_text(markdown)
    update_readme(name, markdown)
    return json_path, md_path


def publish(name: str, result: Mapping[str, Any], markdown: str, write: bool = True) -> None:
    """Print a benchmark's table; with ``write``, also its results files (see
    :func:`write_results`)."""
    print(markdown)
    if write:
        paths = write_results(name, result, markdown)
        log(f"wrote {paths[0]} and {paths[1]}")


def update_readme(name: str, markdown: str) -> None:
    """Replace the block between ``<!-- results:NAME -->`` markers in bench/README.md."""
    if not README.is_file():
        return
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = README.read_text()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{markdown.strip()}\n{end}{tail}")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def verdict_table(verdicts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The Markdown table of a benchmark's targets: ``{key: {value, target, met}}``."""

    def shown(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{name} {shown(number)}" for name, number in value.items())
        return fmt(value, 2) if isinstance(value, float) else str(value)

    lines = ["| target | measured | met |", "|---|---|---|"]
    for key, item in verdicts.items():
        met = "yes" if item["met"] else "NO"
        lines.append(f"| {key}: {item['target']} | {shown(item['value'])} | {met} |")
    return lines


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
