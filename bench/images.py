"""Build time and size of the bentos' container images (``bench/results/images.*``).

``python -m bench.images [BENTO ...]`` builds the latest version of each bento in the
BentoML store (default: every bento ``make images`` builds) with ``bentos/images.py``
(Docker when its engine runs, else buildah) and publishes one row per image. Run it after
``make build``; it leaves the images in place (``make images`` does the same work).
"""

from __future__ import annotations

import argparse
import json
import subprocess

from bench.report import fmt, machine, now_iso, publish
from bentos.images import BENTOML, BuiltImage, build_image

BENTOS = (
    "tradeserve-factor",
    "tradeserve-model-manager",
    "tradeserve-regime-blend",
    "tradeserve-specialists",
    "tradeserve-chronos",
)


def latest(name: str) -> str:
    out = subprocess.run(
        [str(BENTOML), "get", f"{name}:latest", "-o", "json"], capture_output=True, text=True
    )
    return f"{name}:{json.loads(out.stdout)['version']}"


def markdown(images: list[BuiltImage]) -> str:
    rows = [
        "| image | builder | variant | base | build s | size MB |",
        "|---|---|---|---|---:|---:|",
    ]
    for image in images:
        rows.append(
            f"| {image.image.split(':')[0]} | {image.builder} | {image.variant} | "
            f"{image.base} | {fmt(image.seconds)} | {fmt(image.size_bytes / 1e6, 0)} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bentos", nargs="*", default=list(BENTOS))
    args = parser.parse_args()
    images = [build_image(latest(name)) for name in args.bentos]
    result = {
        "when": now_iso(),
        "machine": machine(),
        "images": [image.model_dump() for image in images],
    }
    publish("images", result, markdown(images))


if __name__ == "__main__":
    main()
