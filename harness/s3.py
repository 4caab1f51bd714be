"""A moto S3 server for tests: :func:`moto_s3` yields an :class:`S3Endpoint`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.ports import LOCALHOST


@dataclass(frozen=True)
class S3Endpoint:
    """Where the S3 emulator listens, with the (fake) credentials that it accepts."""

    endpoint_url: str
    bucket: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    def artifacts_destination(self, prefix: str = "mlartifacts") -> str:
        """``s3://<bucket>/<prefix>`` for ``mlflow server --artifacts-destination``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix else f"s3://{self.bucket}"

    def server_env(self) -> dict[str, str]:
        """Environment a process (the MLflow *server*) needs to use this endpoint."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for the emulator (explicit settings, no process env needed)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (moto state is process-global, see moto_s3)."""
        s3 = self.client()
        existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            s3.create_bucket(Bucket=self.bucket)

    def object_keys(self, prefix: str = "") -> list[str]:
        """Keys of all objects in the bucket under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        """The bytes of one object."""
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())


@contextlib.contextmanager
def moto_s3(
    bucket: str = "tradeserve-artifacts", region: str = "us-east-1"
) -> Iterator[S3Endpoint]:
    """A moto S3 server in a background thread on an ephemeral port, with ``bucket`` created.

    Caveat: moto keeps its data in process-global state, so ``moto.mock_aws`` used in the same
    test process resets (wipes) this server's buckets too. Call
    :meth:`S3Endpoint.ensure_bucket` after such tests, or keep them in another process.
    Werkzeug's per-request log lines are silenced while it runs.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    with _quiet_logger("werkzeug"):
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            endpoint = S3Endpoint(endpoint_url=url, bucket=bucket, region=region)
            endpoint.ensure_bucket()
            yield endpoint
        finally:
            server.stop()


@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise a logger's level for the duration of the block."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)
