"""Declare a tradeserve service in one decorator: its tuned BentoML configuration in code,
the shared protections, the ``/admin`` routes.

::

    @tradeserve_service(name="FactorModels", workers=2, traffic={"timeout": 10})
    class FactorModels(ModelService): ...

The keyword arguments are the service's BentoML configuration (``workers``, ``threads``,
``traffic``, ``logging``, ``resources``, ``runner_connection``, ... and ``batching``, which
sizes the service's batchable endpoints). They are merged over tradeserve's shared defaults
and under ``BENTOML_CONFIG`` (see ``bentos.shared.runtime_config``), so a deployment's file
only holds what it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import bentoml
from _bentoml_sdk.io_models import IORootModel
from bentoml import Service
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.utils import deep_merge

from bentos.shared.admin import mount_admin
from bentos.shared.openapi import OpenAPI30Document
from bentos.shared.protection import protect
from bentos.shared.runtime_config import bentoml_config, configured_batching, declare_config

T = TypeVar("T")

# Keys BentoML serves from ``api_server`` (the rest sit at the top of its configuration).
_API_SERVER_KEYS = (
    "traffic",
    "metrics",
    "logging",
    "ssl",
    "http",
    "grpc",
    "backlog",
    "runner_probe",
    "max_runner_connections",
)


class TradeserveService(Service[T]):
    """A BentoML service whose configuration starts from tradeserve's shared defaults."""

    def inject_config(self) -> None:
        """BentoML 1.4.39's ``Service.inject_config`` (_bentoml_sdk/service/factory.py), with
        :data:`~bentos.shared.runtime_config.SHARED_CONFIG` as the defaults of every service:
        BentoML's own passes each service's decorator values only, so shared defaults in code
        would otherwise beat the keys for every service of a deployment's file."""
        config = bentoml_config({name: svc.config for name, svc in self.all_services().items()})
        main = config["services"][self.name]
        api_server = {key: main[key] for key in _API_SERVER_KEYS if main.get(key) is not None}
        rest = {key: value for key, value in main.items() if key not in _API_SERVER_KEYS}
        deep_merge(config, {"api_server": api_server, **rest})
        BentoMLContainer.config.set(config)  # type: ignore[arg-type]
        # BentoML sizes its thread limiter of synchronous endpoints from the decorator's
        # ``threads`` only (_bentoml_impl/server/app.py); give it the merged value.
        if main.get("threads"):
            self.config["threads"] = main["threads"]

    @property
    def openapi_spec(self) -> OpenAPI30Document:  # type: ignore[override]
        """BentoML's document, in valid OpenAPI 3.0 (see ``bentos.shared.openapi``)."""
        return OpenAPI30Document(super().openapi_spec)


def tradeserve_service(*, name: str, **config: Any) -> Callable[[type[T]], Service[T]]:
    """Declare the service ``name`` with its tuned BentoML ``config`` (see the module doc)."""

    def declare(inner: type[T]) -> Service[T]:
        declare_config(name, config)
        service = bentoml.service(name=name, service_class=TradeserveService, **config)(inner)
        service.inner.service_name = name  # type: ignore[attr-defined]
        size_batches(service)
        resolve_media_types(service)
        protect(service)
        mount_admin(service, name)
        return service

    return declare


def size_batches(service: Service[Any]) -> None:
    """Batchable endpoints take the service's merged ``batching`` block."""
    batchable = [api for api in service.apis.values() if api.batchable]
    if batchable:
        batching = configured_batching(service.name)
        for api in batchable:
            api.max_batch_size = batching.max_batch_size
            api.max_latency_ms = batching.max_latency_ms


def resolve_media_types(service: Service[Any]) -> None:
    """Pin the media type of root-model answers (``list[...]``) once, at declaration.

    BentoML 1.4 picks it by generating the output's JSON schema on every response
    (_bentoml_sdk/io_models.py, ``IOMixin.mime_type``): ~2-4 ms of CPU per Specialists
    ``act_batch`` call, about half of what that service spent per composite decision. The
    answer never changes for a given output type, so compute it here.
    """
    for api in service.apis.values():
        output = api.output_spec
        if output.media_type is None and issubclass(output, IORootModel):
            output.media_type = output.mime_type()
