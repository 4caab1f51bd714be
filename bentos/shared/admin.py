"""Admin routes every family service mounts under ``/admin``.

- ``POST /admin/reload``: check the registry now (every worker of the service).
- ``GET /admin/models``: per worker, the served name, version, alias, load time and status
  (including ``rejected version N: reason``), and the registry's reachability.
- ``POST /admin/webhook``: MLflow model-registry webhook (alias created/deleted), handled
  like a reload request once authenticated (:func:`authenticate_webhook`).

They sit behind the same API-key middleware as the model routes, except the webhook: MLflow
cannot send the key, so the middleware lets that path through and its handler requires
MLflow's signature instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import bentoml
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

from bentos.shared.lineage import ModelRef
from bentos.shared.live import LiveUpdater, WorkerStatus, worker_statuses
from bentos.shared.settings import ServingSettings, get_serving_settings

ALIAS_EVENTS = {"model_version_alias.created", "model_version_alias.deleted"}


class AdminModels(BaseModel):
    service: str
    live: bool
    workers: list[WorkerStatus]
    models: list[ModelRef]


def verify_signature(secret: str, body: bytes, headers: Any) -> bool:
    """MLflow 3 webhook signature: ``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>``."""
    signature = headers.get("x-mlflow-signature", "")
    delivery_id = headers.get("x-mlflow-delivery-id", "")
    timestamp = headers.get("x-mlflow-timestamp", "")
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    expected = b"v1," + digest
    return hmac.compare_digest(signature.encode(), expected)


def authenticate_webhook(
    settings: ServingSettings, body: bytes, headers: Any, now: float | None = None
) -> None:
    """Raise unless the delivery may be acted on.

    With ``TRADESERVE_WEBHOOK_SECRET``: a valid signature whose ``X-MLflow-Timestamp`` (Unix
    seconds, part of what is signed) is within ``webhook_tolerance_s`` of now, so a captured
    delivery cannot be replayed later. Without it, deliveries are unsigned and accepted only
    while no API key is set either (a development setup): with a key they are refused, since
    MLflow cannot send the key and an unsigned event would bypass it.
    """
    if settings.webhook_secret is None:
        if settings.api_key is not None:
            raise HTTPException(
                403,
                "webhooks are refused while TRADESERVE_API_KEY is set without "
                "TRADESERVE_WEBHOOK_SECRET: set TRADESERVE_WEBHOOK_SECRET to the MLflow "
                "webhook's secret (or call POST /admin/reload with the key)",
            )
        return
    if not verify_signature(settings.webhook_secret.get_secret_value(), body, headers):
        raise HTTPException(401, "invalid webhook signature")
    try:
        sent = int(headers.get("x-mlflow-timestamp", ""))
    except ValueError:
        raise HTTPException(401, "webhook timestamp is not Unix seconds") from None
    age = (time.time() if now is None else now) - sent
    if abs(age) > settings.webhook_tolerance_s:
        raise HTTPException(
            401,
            f"webhook timestamp is {age:.0f} s from now, outside the "
            f"{settings.webhook_tolerance_s} s window (a replayed delivery, or clock skew)",
        )


def admin_app(service_name: str) -> FastAPI:
    """The admin sub-application of ``service_name``."""
    app = FastAPI(title=f"{service_name} admin", docs_url=None, redoc_url=None)

    def current() -> Any:
        return bentoml.get_current_service()

    def updater() -> LiveUpdater:
        live = getattr(current(), "live", None)
        if live is None:
            raise HTTPException(409, "live promotion is off for this service (TRADESERVE_LIVE)")
        return live

    @app.get("/models")
    def models() -> AdminModels:
        service = current()
        live = getattr(service, "live", None)
        served = [m.ref for models in service.model_sets() for m in models.models.values()]
        return AdminModels(
            service=service_name,
            live=live is not None,
            workers=worker_statuses(service_name) if live is not None else [],
            models=sorted(served, key=lambda ref: ref.name),
        )

    @app.post("/reload")
    def reload() -> AdminModels:
        live = updater()
        live.request_reload()  # the other workers
        live.check_now()  # this one, before answering
        return models()

    @app.post("/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        body = await request.body()
        authenticate_webhook(get_serving_settings(), body, request.headers)
        try:
            event = json.loads(body)
        except json.JSONDecodeError:
            raise HTTPException(400, "webhook body is not JSON") from None
        action = f"{event.get('entity')}.{event.get('action')}"
        name = (event.get("data") or {}).get("name")
        served = {ref.name for ref in models().models}
        relevant = action in ALIAS_EVENTS and name in served
        if relevant:
            updater().request_reload()
        return {"accepted": True, "reload": relevant}

    return app


def mount_admin(service: Any, service_name: str) -> None:
    """Mount the admin routes of ``service_name`` under ``/admin``."""
    service.mount_asgi_app(admin_app(service_name), path="/admin")
