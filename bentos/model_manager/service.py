"""ModelManager: model_manager's API over the MLflow registry.

Artifact directories registered over HTTP (or with ``tradeserve import``) are imported as
factor-model versions and watched; the promoted versions' payloads and ONNX files are served
to tree-running clients, and venue quantile tables are imported, served and published to
Redis. Routes: ``bentos.model_manager.api`` (the seed's ``/api/...``); ``/admin/models`` and
``/admin/reload`` (live promotion, shared with the other services); BentoML adds
``/readyz``, ``/livez`` and ``/metrics``. Responses over 1 KB are gzip-compressed for
clients that accept it, as model_manager's were.
"""

from __future__ import annotations

import bentoml
from starlette.middleware.gzip import GZipMiddleware

from bentos.model_manager.api import app
from bentos.model_manager.bodies import GZIP_LEVEL, GZIP_MIN_BYTES
from bentos.model_manager.core import ModelManagerCore
from bentos.model_manager.settings import get_model_manager_settings
from bentos.shared.declare import tradeserve_service
from bentos.shared.lifecycle import ModelService

SERVICE_NAME = "ModelManager"


@tradeserve_service(
    name=SERVICE_NAME,
    # One worker: the watcher and the Redis publisher must run once, and imports of one
    # directory must not race each other.
    workers=1,
    # Registering a directory writes one registry version per group (~0.5 s each), through
    # the gate when auto-promoted: a large directory takes minutes.
    traffic={"timeout": 600, "max_concurrency": 256},
)
@bentoml.asgi_app(app, path="/")
class ModelManager(ModelService):
    """Registers, watches and serves model_manager artifact directories and venue tables."""

    def __init__(self) -> None:
        self.core = ModelManagerCore(get_model_manager_settings())
        # nothing is required: a registry without directories or venue tables is ready
        self.serve(optional=(self.core.factors, self.core.venues.served))
        self.core.start()

    @bentoml.on_shutdown
    def close(self) -> None:
        self.core.stop()


# The other answers over 1 KB (symbol details, listings) are compressed per request; the
# payloads and ONNX files come compressed from their cache (bentos.model_manager.bodies).
ModelManager.add_asgi_middleware(
    GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=GZIP_LEVEL
)
