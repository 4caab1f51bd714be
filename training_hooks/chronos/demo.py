"""Chronos demo: register random-weight T5, Bolt and Chronos-2 models, tagged untrained."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from training_hooks.chronos.builders import SIZES, backbone, build_random_chronos
from training_hooks.chronos.log import log_chronos
from training_hooks.chronos.runtime import kind_of_name
from training_hooks.chronos.validation import ChronosKind
from training_hooks.registration import Lineage, RegisteredVersion

DEMO_CHRONOS2_SIZE = "small"


def demo_plan(size: str) -> list[tuple[ChronosKind, str, str]]:
    """(kind, builder size, registered name) of the demo models at ``size``."""
    chronos2_size = size if size in SIZES["chronos2"] else DEMO_CHRONOS2_SIZE
    return [
        ("t5", size, f"chronos-t5-{size}"),
        ("bolt", size, f"chronos-bolt-{size}"),
        ("chronos2", chronos2_size, "chronos-2"),
    ]


def register_demo_chronos(
    size: str = "tiny", workdir: Path | None = None
) -> list[RegisteredVersion]:
    """Register random-weight T5, Bolt and Chronos-2 models, tagged untrained.

    Chronos-2 uses its ``small`` (28M) shape unless ``size`` is one of its own sizes.
    The caller decides about promotion.
    """
    plan = demo_plan(size)
    for kind, model_size, name in plan:  # fail before building anything
        kind_of_name(name)
        backbone(kind, model_size)
    versions = []
    with _work_folder(workdir) as root:
        for kind, model_size, name in plan:
            folder = build_random_chronos(kind, model_size, root / name)
            lineage = Lineage(
                data_source="random-init",
                extra={"init_seed": "0", "architecture": f"{kind}-{model_size}"},
            )
            versions.append(
                log_chronos(
                    name,
                    folder,
                    lineage=lineage,
                    untrained=True,
                    description=f"Random-weight chronos {kind} ({model_size} shape): untrained, "
                    "for pipeline and load tests only.",
                )
            )
    return versions


@contextlib.contextmanager
def _work_folder(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="tradeserve-chronos-demo-") as tmp:
        yield Path(tmp)
