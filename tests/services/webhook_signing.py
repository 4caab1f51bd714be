"""Webhook deliveries signed the way MLflow 3 signs them (``mlflow/webhooks/delivery.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def signed(body: bytes, secret: str, sent: float | None = None) -> dict[str, str]:
    """The headers MLflow sends with ``body`` signed with ``secret`` at ``sent`` (now)."""
    delivery, timestamp = "delivery-1", str(int(time.time() if sent is None else sent))
    digest = hmac.new(secret.encode(), f"{delivery}.{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "x-mlflow-delivery-id": delivery,
        "x-mlflow-timestamp": timestamp,
        "x-mlflow-signature": "v1," + base64.b64encode(digest.digest()).decode(),
    }
