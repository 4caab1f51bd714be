"""Folders and ``s3://`` prefixes, the two places RegimeBlend shares files with other pods:
market data it reads (mirrored into a local folder) and decision archives it writes.

S3 goes through boto3 as everywhere in tradeserve: credentials and ``AWS_ENDPOINT_URL`` come
from the environment (MinIO, moto and other S3-compatible stores work the same).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from registry.errors import TradeserveError


class StorageError(TradeserveError):
    http_status = 503


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b/``) (an empty prefix for the bucket root)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def write_object(uri: str, name: str, data: bytes) -> str:
    """Store ``data`` as ``name`` under the folder or prefix ``uri``; the object's address."""
    if is_s3(uri):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = split_s3(uri)
        try:
            boto3.client("s3").put_object(Bucket=bucket, Key=prefix + name, Body=data)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"cannot write s3://{bucket}/{prefix}{name}: {error}") from error
        return f"s3://{bucket}/{prefix}{name}"
    path = Path(uri.removeprefix("file://")).expanduser() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, data)
    return str(path)


def mirror_prefix(uri: str, dest: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Download the files directly under the ``s3://`` prefix ``uri`` whose names end in
    ``suffixes`` into ``dest``, skipping those whose ETag is unchanged since the last
    mirror; each file is replaced atomically (a reader sees the old or the new file). The
    names downloaded."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(uri)
    dest.mkdir(parents=True, exist_ok=True)
    s3 = boto3.client("s3")
    fetched = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix) :]
                if "/" in name or not name.endswith(suffixes):
                    continue
                tag = dest / f".{name}.etag"
                etag = str(item.get("ETag", ""))
                if (dest / name).exists() and tag.exists() and tag.read_text() == etag:
                    continue
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                _atomic_write(dest / name, body)
                tag.write_text(etag)
                fetched.append(name)
    except (BotoCoreError, ClientError) as error:
        raise StorageError(f"cannot read market data at {uri}: {error}") from error
    return fetched


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
