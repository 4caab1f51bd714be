"""Every package a bento installs, pinned: its top-level packages plus their whole dependency
closure at the versions of ``constraints.txt``.

A bentofile names only the packages the service imports; left alone, the image's installer
would pick the newest release of every dependency on the day of the build. The closure is
walked through the metadata of this environment (installed with ``-c constraints.txt``, on
the platform and Python the images use), so no resolver runs and no network is needed, and
the image installs exactly the versions the tests ran with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from registry.errors import TradeserveError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO_ROOT / "constraints.txt"


def normalized(name: str) -> str:
    """PEP 503 name: what pip freeze and the index agree on."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a constraints file."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalized(Requirement(name).name)] = version.strip()
    return pins


def pinned_closure(packages: Iterable[str], pins: Mapping[str, str] | None = None) -> list[str]:
    """``packages`` (in their order) followed by every dependency they pull in, each as
    ``name==version`` with the version from ``pins`` (``constraints.txt`` by default).

    A package ``constraints.txt`` does not pin (torch, installed first by the Makefile, and
    its setuptools) gets the version installed here; one that is neither pinned nor
    installed is an error naming it.
    """
    pins = dict(constraint_pins() if pins is None else pins)
    order: dict[str, None] = {}
    queue = [Requirement(spec) for spec in packages]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while queue:
        requirement = queue.pop(0)
        name = normalized(requirement.name)
        extras = tuple(sorted(requirement.extras))
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        order.setdefault(name)
        queue.extend(_requires(name, extras))
    for name in order:
        pins.setdefault(name, metadata.version(name))  # installed: _requires checked it
    return [f"{name}=={_public(pins[name])}" for name in order]


def _requires(name: str, extras: tuple[str, ...]) -> list[Requirement]:
    """The requirements of the installed ``name`` that apply here with ``extras`` asked."""
    try:
        requires = metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        raise TradeserveError(f"{name} is not installed in this environment") from None
    wanted: list[Requirement] = []
    for line in requires:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *extras)):
            wanted.append(requirement)
    return wanted


def _public(version: str) -> str:
    """The version without a local label (``2.13.0+cpu`` -> ``2.13.0``): the image picks the
    build (CPU or CUDA) from the index it is given."""
    return version.split("+", 1)[0]
