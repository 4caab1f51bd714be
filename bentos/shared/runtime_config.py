"""The BentoML configuration of tradeserve services: tuned values in code, files over them.

A service declares its tuned BentoML configuration in code (``tradeserve_service(...)`` in
``bentos.shared.declare``). BentoML 1.4 builds a service's configuration in this order, each
layer deep-merged over the previous one (``BentoMLConfiguration``, schema v2):

1. BentoML's defaults;
2. :data:`SHARED_CONFIG` (keys directly under ``services:``: defaults for every service) and
   each service's code values (``services.<Name>``);
3. ``BENTOML_CONFIG`` (a file such as ``configuration.yaml``), ``BENTOML_CONFIG_OVERRIDES``
   (JSON) and ``BENTOML_CONFIG_OPTIONS`` (``key=value`` pairs);
4. then a service's own block is merged over the keys for every service (``finalize_config``).

So a deployment overrides a value a service sets in code under the service's name
(``services.FactorModels.workers``), and a shared default either way. :func:`service_config`
runs that same merge, so tradeserve's readers below (torch threads, batching) see exactly
what BentoML serves with, with or without a file.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

# Request durations from 1 ms (a factor prediction) to 30 s (a Chronos batch under load);
# Prometheus' default buckets start at 5 ms and stop at 10 s.
DURATION_BUCKETS = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
]  # fmt: skip

# Defaults of every tradeserve service, under the values a service declares in code.
SHARED_CONFIG: dict[str, Any] = {
    "metrics": {"enabled": True, "duration": {"buckets": DURATION_BUCKETS}},
    "backlog": 2048,  # pending connections per socket: a burst of clients queues, not fails
    # OpenTelemetry spans: off until an exporter is configured. BentoML always installs its
    # OpenTelemetry middleware, which costs ~0.2 ms of CPU per request even with no exporter
    # and sample_rate 0 (16% of a FactorModels request); excluding every URL (regex "/") is
    # the only switch. To trace, set an exporter AND narrow the exclusions, e.g. with
    # BENTOML_CONFIG_OPTIONS="services.tracing.exporter_type=otlp
    #   services.tracing.otlp.protocol=grpc services.tracing.otlp.endpoint=http://otel:4317
    #   services.tracing.sample_rate=0.1 services.tracing.excluded_urls=/livez,/readyz,/metrics"
    "tracing": {"exporter_type": None, "sample_rate": 0.0, "excluded_urls": ["/"]},
}

# What the merge reads besides the code: BentoML's own variables.
_CONFIG_ENVS = ("BENTOML_CONFIG", "BENTOML_CONFIG_OVERRIDES", "BENTOML_CONFIG_OPTIONS")

_DECLARED: dict[str, dict[str, Any]] = {}


class Batching(BaseModel):
    max_batch_size: int = Field(ge=2)
    max_latency_ms: int = Field(ge=1)
    # Batches computed at once per worker: the service's ``threads`` (BentoML's threads for
    # synchronous work, where tradeserve runs its model calls); set by configured_batching.
    concurrent_calls: int = Field(default=1, ge=1)


def declare_config(service: str, config: Mapping[str, Any]) -> None:
    """Record ``service``'s code configuration (its decorator's BentoML keys)."""
    _DECLARED[service] = copy.deepcopy(dict(config))


def bentoml_config(services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """BentoML's whole configuration with ``services`` (name -> code configuration) over
    :data:`SHARED_CONFIG`, and the environment's files and options over both."""
    from bentoml._internal.configuration import (
        get_bentoml_config_file_from_env,
        get_bentoml_override_config_from_env,
        get_bentoml_override_config_json_from_env,
    )
    from bentoml._internal.configuration.containers import BentoMLConfiguration

    # A service whose code sets nothing still needs a block of its own ("name" is a neutral
    # key of the schema); BentoML's inherited keys reach it in finalize_config.
    declared = {name: dict(config) or {"name": name} for name, config in services.items()}
    return BentoMLConfiguration(
        override_config_file=get_bentoml_config_file_from_env(),
        override_config_values=get_bentoml_override_config_from_env(),
        override_defaults={"services": {**copy.deepcopy(SHARED_CONFIG), **declared}},
        override_config_json=get_bentoml_override_config_json_from_env(),
        use_version=2,
    ).to_dict()


def service_config(service: str) -> dict[str, Any]:
    """``services.<service>`` as BentoML serves it (a copy)."""
    code = json.dumps(_DECLARED.get(service, {}), sort_keys=True)
    environment = tuple(os.environ.get(name) for name in _CONFIG_ENVS)
    return copy.deepcopy(_merged(service, code, environment))


@functools.lru_cache(maxsize=32)
def _merged(service: str, code: str, environment: tuple[str | None, ...]) -> dict[str, Any]:
    """Merged once per code and environment: a service reads it several times at start-up."""
    return bentoml_config({service: json.loads(code)})["services"][service]


def configured_workers(service: str) -> int:
    """The service's ``workers`` (1 when unset; ``cpu_count``: the machine's cores)."""
    workers = service_config(service).get("workers") or 1
    if workers == "cpu_count":
        return os.cpu_count() or 1
    return int(workers)


def configured_threads(service: str) -> int:
    """The service's ``threads``: synchronous calls at once per worker (1 when unset)."""
    return int(service_config(service).get("threads") or 1)


def configured_batching(service: str) -> Batching:
    """The service's ``batching`` block, with ``concurrent_calls`` = its threads."""
    block = dict(service_config(service).get("batching") or {})
    block.pop("enabled", None)
    if not block:
        raise ValueError(f"{service} declares no batching (max_batch_size, max_latency_ms)")
    return Batching(**block, concurrent_calls=configured_threads(service))
