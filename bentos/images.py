"""Container images of built bentos, with Docker or without: ``make images`` / ``run-image``.

With a running Docker engine (BuildKit) an image is what ``bentoml containerize`` makes, as
before. Without one, the same generated Dockerfile is built by ``buildah`` (daemonless,
``--isolation chroot``: podman, runc and crun cannot set rlimits on such hosts) from the
bento's ``bentoml export`` archive, which, unlike the store folder, carries the models.
When the Dockerfile's base (``python:3.11-slim``) is neither local nor pullable, the same
Debian release's Python is bootstrapped once with ``mmdebstrap`` and cached as
:data:`DEBIAN_BASE`. The torch bentos' Dockerfile is CUDA's; without Docker their CPU image
is rendered from the same bento with ``bentos/slim.Dockerfile.j2`` and the torch CPU wheel
of this machine's wheelhouse or index (``pip config``), mounted into the build.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from bentos.pins import normalized
from registry.errors import TradeserveError

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTOML = Path(sys.executable).with_name("bentoml")
SLIM_TEMPLATE = "bentos/slim.Dockerfile.j2"
DEBIAN_BASE = "localhost/tradeserve-python:3.11-bookworm"
DEBIAN_MIRROR = os.environ.get("TRADESERVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
BUILD_CA = "/run/tradeserve-ca.crt"  # where a build sees this machine's CA bundle
ENTRYPOINT = "/home/bentoml/bento/env/docker/entrypoint.sh"
# buildah's chroot isolation sometimes fails to seal a memfd copy; a retry passes.
TRANSIENT = re.compile(r"memfd|Device or resource busy")
Builder = Literal["docker", "buildah"]


class BuiltImage(BaseModel):
    """One image ``make images`` produced."""

    bento: str = Field(description="Bento tag")
    image: str = Field(description="Image name:version (also tagged :latest)")
    builder: Builder
    variant: Literal["cpu", "cuda"]
    base: str = Field(description="Image it was built FROM")
    seconds: float
    size_bytes: int


def docker_works() -> bool:
    """A Docker engine answers (the client alone is not enough)."""
    return shutil.which("docker") is not None and _ok(["docker", "info"])


def builder() -> Builder:
    """Docker when its engine runs, else buildah; neither is a user error."""
    if docker_works():
        return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise TradeserveError("building images needs a running Docker engine or buildah")


def is_torch_bento(bento_dir: Path) -> bool:
    """A bento whose Dockerfile is BentoML's CUDA one (chronos, specialists, composite)."""
    return bool(re.search(r"^FROM nvidia/cuda", _dockerfile(bento_dir), re.MULTILINE))


# ------------------------------------------------------------------- contexts


@contextlib.contextmanager
def build_context(tag: str, env: Mapping[str, str] | None = None) -> Iterator[Path]:
    """The bento ``tag`` exported and unpacked into a temporary folder: the build context,
    models included."""
    with tempfile.TemporaryDirectory(prefix="tradeserve-image-") as folder:
        archive = Path(folder) / "bento.tar"
        _check([str(BENTOML), "export", tag, str(archive)], env=env)
        context = Path(folder) / "context"
        with tarfile.open(archive) as tar:
            tar.extractall(context, filter="tar")
        archive.unlink()
        yield context


def write_cpu_dockerfile(context: Path) -> Path:
    """Render the CPU Dockerfile of a torch bento into its context (``Dockerfile.cpu``) and
    pin torch's CPU build, which the machine's wheelhouse or index provides."""
    import yaml
    from bentoml._internal.bento.build_config import CondaOptions, DockerOptions
    from bentoml._internal.container.generate import generate_containerfile

    info = yaml.safe_load((context / "bento.yaml").read_text())
    docker = dict(info.get("docker") or {})
    docker.update(cuda_version=None, dockerfile_template=SLIM_TEMPLATE, base_image=None)
    options = DockerOptions(**{k: v for k, v in docker.items() if k in _docker_fields()})
    with contextlib.chdir(REPO_ROOT):  # BentoML resolves the template under the cwd only
        text = generate_containerfile(
            options.with_defaults(), str(REPO_ROOT), conda=CondaOptions(), bento_fs=context
        )
    path = context / "env" / "docker" / "Dockerfile.cpu"
    path.write_text(text)
    requirements = context / "env" / "python" / "requirements.txt"
    requirements.write_text(
        re.sub(r"^torch==([^+\s]+)$", r"torch==\1+cpu", requirements.read_text(), flags=re.M)
    )
    return path


def host_package_sources() -> dict[str, list[str]]:
    """This machine's local wheelhouses and file:// indexes from ``pip config``
    (``find-links``, ``extra-index-url``), as uv build args; where a torch CPU wheel lies."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    found: dict[str, list[str]] = {"find-links": [], "extra-index-url": []}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        if option in found:
            for item in value.strip("'\"").split():
                path = item.removeprefix("file://")
                if Path(path).is_dir() and item not in found[option]:
                    found[option].append(item)
    return found


def torch_cpu_wheel() -> str | None:
    """Where this machine offers a torch CPU wheel to builds (a wheelhouse or a file://
    index from ``pip config``), or None: then no torch CPU image can be built here."""
    sources = host_package_sources()
    for item in sources["find-links"]:
        if any(Path(item.removeprefix("file://")).glob("torch-*+cpu-*.whl")):
            return item
    for item in sources["extra-index-url"]:
        if any((Path(item.removeprefix("file://")) / "torch").glob("torch-*+cpu-*.whl")):
            return item
    return None


# ------------------------------------------------------------------- base image


def image_exists(name: str) -> bool:
    return _ok(["buildah", "inspect", "--type", "image", name])


def base_for(dockerfile: Path) -> str:
    """The image to build ``dockerfile`` FROM: its own base when local or pullable, else
    the cached Debian equivalent (built once)."""
    match = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    if match is None:
        raise TradeserveError(f"{dockerfile} has no FROM line")
    wanted = match.group(1)
    if image_exists(wanted) or _ok(["buildah", "pull", "-q", wanted], timeout=300):
        return wanted
    if not wanted.startswith("python:3.11"):
        raise TradeserveError(f"base image {wanted} is not available and cannot be pulled")
    return ensure_debian_base()


def ensure_debian_base(name: str = DEBIAN_BASE) -> str:
    """``python:3.11-slim``'s equivalent from Debian bookworm's packages (python3.11, venv,
    CA certificates; no docs, man pages or locales), cached as ``name``."""
    if image_exists(name):
        return name
    if not shutil.which("mmdebstrap"):
        raise TradeserveError("no base image: install mmdebstrap (or make one pullable)")
    excludes = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")]
    with tempfile.TemporaryDirectory(prefix="tradeserve-base-") as folder:
        rootfs = Path(folder) / "rootfs.tar"
        _check(
            [
                "mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                *excludes, "bookworm", str(rootfs), DEBIAN_MIRROR,
            ]
        )  # fmt: skip
        container = _check(["buildah", "from", "scratch"]).strip()
        try:
            _check(["buildah", "add", container, str(rootfs), "/"])
            _check(["buildah", "config", "--env", "LANG=C.UTF-8", "--cmd", "python3", container])
            _check(["buildah", "commit", "-q", container, name])
        finally:
            _ok(["buildah", "rm", container])
    return name


# ------------------------------------------------------------------- build


def build_image(
    tag: str,
    registry: str = "",
    env: Mapping[str, str] | None = None,
    use: Builder | None = None,
) -> BuiltImage:
    """Build the image of bento ``tag`` (``name:version``) as ``<registry>name:version`` and
    ``:latest``, with ``use`` (default: Docker when it runs, else buildah)."""
    name, version = tag.split(":", 1)
    image = f"{registry}{name}:{version}"
    started = time.perf_counter()
    if (use or builder()) == "docker":
        _check([str(BENTOML), "containerize", tag, "-t", image, "-t", f"{registry}{name}:latest"],
               env=env)  # fmt: skip
        size = int(_check(["docker", "image", "inspect", "-f", "{{.Size}}", image]).strip())
        base = _check(
            [
                "docker",
                "image",
                "inspect",
                "-f",
                '{{index .Config.Labels "org.opencontainers.image.base.name"}}',
                image,
            ]
        ).strip()
        return BuiltImage(
            bento=tag, image=image, builder="docker", variant="cuda" if "cuda" in base else "cpu",
            base=base, seconds=round(time.perf_counter() - started, 1), size_bytes=size,
        )  # fmt: skip
    with build_context(tag, env) as context:
        torch = is_torch_bento(context)
        dockerfile = write_cpu_dockerfile(context) if torch else _default_dockerfile(context)
        base = base_for(dockerfile)
        args = _buildah_args(torch)
        command = [
            "buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers=false",
            "--from", base, "-f", str(dockerfile), *args, "-t", image, "-t",
            f"{registry}{name}:latest", str(context),
        ]  # fmt: skip
        _check(command, retries=1)
    return BuiltImage(
        bento=tag, image=image, builder="buildah", variant="cpu", base=base,
        seconds=round(time.perf_counter() - started, 1), size_bytes=image_size(image),
    )  # fmt: skip


def _buildah_args(torch: bool) -> list[str]:
    """Build args and mounts: this machine's CA bundle (pip and uv verify against it), and
    for torch images its wheelhouses/indexes."""
    args: list[str] = []
    if HOST_CA.is_file():
        args += ["--volume", f"{HOST_CA}:{BUILD_CA}:ro"]
        args += [f"--build-arg={key}={BUILD_CA}" for key in ("SSL_CERT_FILE", "PIP_CERT")]
    if torch:
        sources = host_package_sources()
        for item in (*sources["find-links"], *sources["extra-index-url"]):
            path = Path(item.removeprefix("file://"))
            if path.name == "simple":  # an index's pages link to files beside it
                path = path.parent
            args += ["--volume", f"{path}:{path}:ro"]
        if sources["find-links"]:
            args.append(f"--build-arg=UV_FIND_LINKS={','.join(sources['find-links'])}")
        if sources["extra-index-url"]:
            args.append(f"--build-arg=UV_EXTRA_INDEX_URL={' '.join(sources['extra-index-url'])}")
            args.append("--build-arg=UV_INDEX_STRATEGY=unsafe-best-match")
    return args


def image_size(image: str) -> int:
    """Size of a local buildah image: its layers, uncompressed, bytes."""
    manifest = _check(["buildah", "inspect", "--type", "image", "--format", "{{.Manifest}}", image])
    return sum(int(layer["size"]) for layer in json.loads(manifest)["layers"])


def remove_image(*images: str) -> None:
    """Remove local buildah images (missing ones are fine); the base cache stays."""
    for image in images:
        _ok(["buildah", "rmi", "-f", image])


# ------------------------------------------------------------------- run


def run_argv(
    image: str,
    port: int,
    env: Mapping[str, str],
    container: str,
    engine: str | None = None,
    volumes: Sequence[str] = (),
) -> list[str]:
    """The command that serves ``image`` on ``127.0.0.1:port`` with ``env`` added and
    ``volumes`` (``host:container[:ro]``) mounted: buildah's (host network, ``PORT`` read by
    BentoML's entrypoint) unless a Docker or podman engine that works is named (a mapped
    port)."""
    mounts = [f"--volume={volume}" for volume in volumes]
    if engine in ("docker", "podman"):
        flags = [f"--env={k}={v}" for k, v in env.items()]
        return [engine, "run", "--rm", "--name", container, "-p", f"127.0.0.1:{port}:3000",
                *flags, *mounts, image]  # fmt: skip
    flags = [f"--env={k}={v}" for k, v in {**env, "PORT": str(port)}.items()]
    return ["buildah", "run", "--isolation", "chroot", "--network", "host", *flags, *mounts,
            container, "--", ENTRYPOINT]  # fmt: skip


def new_container(image: str, name: str) -> str:
    """A buildah working container of ``image`` (what ``buildah run`` runs in)."""
    return _check(["buildah", "from", "--pull-never", "--name", name, image]).strip()


def remove_container(name: str) -> None:
    _ok(["buildah", "rm", name])


LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m\n"
    "for d in m.distributions(): print(f\"{d.metadata['Name']}=={d.version}\")"
)


def installed(container: str) -> dict[str, str]:
    """``name -> version`` of every distribution in a container's /app/.venv (what ``pip
    freeze`` lists; the slim venv has no pip), local labels dropped."""
    out = _check(["buildah", "run", "--isolation", "chroot", container, "--",
                  "/app/.venv/bin/python", "-c", LIST_DISTRIBUTIONS])  # fmt: skip
    return _pins(out.splitlines())


def requirement_pins(lines: Sequence[str]) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a requirements file."""
    return _pins(lines)


# ------------------------------------------------------------------- helpers


def _pins(lines: Sequence[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        if "==" in line and not line.startswith(("-", "#")):
            name, version = line.split("==", 1)
            pins[normalized(name.strip())] = version.strip().split("+", 1)[0]
    return pins


def _default_dockerfile(context: Path) -> Path:
    return context / "env" / "docker" / "Dockerfile"


def _dockerfile(bento_dir: Path) -> str:
    return _default_dockerfile(bento_dir).read_text()


def _docker_fields() -> set[str]:
    import attr
    from bentoml._internal.bento.build_config import DockerOptions

    return {field.name for field in attr.fields(DockerOptions)}


def _ok(command: Sequence[str], timeout: float = 120) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _check(command: Sequence[str], env: Mapping[str, str] | None = None, retries: int = 0) -> str:
    """Run ``command``; its stdout, or a :class:`TradeserveError` with its output's tail."""
    for attempt in range(retries + 1):
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode == 0:
            return result.stdout
        if attempt < retries and TRANSIENT.search(result.stderr):
            continue
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise TradeserveError(f"{' '.join(command[:3])} ... failed:\n{tail}")
    raise AssertionError("unreachable")


# ------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bentos.images build [--registry R] NAME...`` (latest versions) and
    ``python -m bentos.images run NAME [--port P] [--engine E] [--env K=V ...]``."""
    import argparse

    import bentoml

    parser = argparse.ArgumentParser(prog="python -m bentos.images")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the images of the latest bentos")
    build.add_argument("names", nargs="+")
    build.add_argument("--registry", default="")
    run = sub.add_parser("run", help="serve an image on 127.0.0.1:PORT until Ctrl-C")
    run.add_argument("name")
    run.add_argument("--port", type=int, default=3000)
    run.add_argument("--engine", choices=("buildah", "docker", "podman"), default=None)
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--volume", action="append", default=[], metavar="HOST:PATH[:ro]")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in args.names:
                try:
                    tag = str(bentoml.get(f"{name}:latest").tag)
                except bentoml.exceptions.NotFound:
                    print(f"{name}: no bento built, skipped")
                    continue
                built = build_image(tag, args.registry)
                print(f"{built.image}: {built.size_bytes / 1e6:.0f} MB in {built.seconds} s "
                      f"({built.builder}, {built.variant}, FROM {built.base})")  # fmt: skip
            return 0
        engine = args.engine or ("docker" if docker_works() else "buildah")
        env = dict(item.split("=", 1) for item in args.env)
        image = args.name if ":" in args.name else f"{args.name}:latest"
        container = f"{args.name.split(':')[0].rsplit('/', 1)[-1]}-run"
        if engine == "buildah":
            remove_container(container)
            new_container(image, container)
        try:
            argv = run_argv(image, args.port, env, container, engine, args.volume)
            return subprocess.run(argv).returncode
        finally:
            if engine == "buildah":
                remove_container(container)
    except TradeserveError as error:
        print(f"tradeserve: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
