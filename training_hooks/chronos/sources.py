"""Chronos model sources: a local folder, a Hugging Face cache entry or an ``s3://`` prefix,
each fetched by :func:`fetch_model_folder` into a folder that
:func:`~training_hooks.chronos.log.log_chronos` can log.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from pathlib import Path

from training_hooks.chronos.validation import ChronosSourceError

# Files copied from a source folder into the logged model: JSON configs and safetensors
# weights only, so a logged Chronos model never contains pickled tensors.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "adapter_config.json",
    "README.md",
    "LICENSE*",
)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_model_file(name: str) -> bool:
    """Whether a file belongs in a logged Chronos model (configs and safetensors only)."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)


def fetch_model_folder(source: str | Path, dest: Path) -> Path:
    """Copy the model files of ``source`` into ``dest`` and return it.

    ``source`` is a local folder, a Hugging Face model id already in the local cache
    (resolved offline), or an ``s3://bucket/prefix`` (boto3; ``AWS_ENDPOINT_URL`` selects
    an S3-compatible endpoint). Only configs and safetensors weights are kept.
    """
    text = str(source)
    dest = Path(dest)
    if text.startswith("s3://"):
        return _require_weights(_download_s3(text, dest), text)
    local = Path(text).expanduser()
    if local.is_dir():
        origin = local
    elif _REPO_ID.match(text):
        origin = _hf_cache_snapshot(text)
    else:
        raise ChronosSourceError(
            f"'{text}' is not a local folder, an s3:// prefix or a Hugging Face model id"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for path in origin.iterdir():
        if path.is_file() and is_model_file(path.name):
            shutil.copyfile(path, dest / path.name)  # follows hub-cache symlinks
    return _require_weights(dest, text)


def _require_weights(folder: Path, source: str) -> Path:
    names = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    if "config.json" not in names or not any(name.endswith(".safetensors") for name in names):
        raise ChronosSourceError(
            f"{source} has no config.json plus *.safetensors weights (usable files: {names}); "
            "tradeserve never loads pickled weights such as pytorch_model.bin"
        )
    return folder


def _hf_cache_dir() -> str:
    """The hub cache as configured now (huggingface_hub reads its env once at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return constants.HF_HUB_CACHE


def _hf_cache_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = _hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as error:
        raise ChronosSourceError(
            f"'{repo_id}' is not a local folder and is not in the Hugging Face cache {cache}; "
            f"run `hf download {repo_id}` where the Hub is reachable, or pass a local folder "
            "or an s3:// prefix"
        ) from error


def _download_s3(uri: str, dest: Path) -> Path:
    """Download the model files directly under ``s3://bucket/prefix`` into ``dest``."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    dest.mkdir(parents=True, exist_ok=True)
    s3 = boto3.client("s3")
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(prefix) :]
                if "/" not in name and is_model_file(name):
                    s3.download_file(bucket, entry["Key"], str(dest / name))
    except (BotoCoreError, ClientError) as error:
        raise ChronosSourceError(f"cannot read {uri}: {error}") from error
    return dest
