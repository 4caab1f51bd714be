"""schemathesis over every service's OpenAPI document: each real service (`bentoml serve` on
the demo registry) gets a few hundred generated requests in total, none may answer 5xx and
every answer must match the document; the documents themselves must be OpenAPI 3.0."""

from __future__ import annotations

import importlib
import json
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import NonInteractiveExampleWarning
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from harness.bento import BentoServer
from tests.composite.conftest import serve_root
from tests.services.conftest import serve_demo

SERVICES = {
    "composite": "bentos.regime_blend.service:RegimeBlend",
    "chronos": "bentos.chronos.service:ChronosForecaster",
    "factor": "bentos.factor.service:FactorModels",
    "specialists": "bentos.specialists.service:Specialists",
    "model_manager": "bentos.model_manager.service:ModelManager",
}
# generated requests per operation (Chronos fewer: a valid forecast is the slow one)
EXAMPLES = {"composite": 25, "chronos": 8, "factor": 25, "specialists": 25}
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture(scope="module")
def composite_server(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A composite of its own: the fuzzer rewrites its portfolio."""
    folder = tmp_path_factory.mktemp("fuzz-composite")
    with serve_root(demo_home, folder / "state", folder / "serve.log") as server:
        yield server


@pytest.fixture(scope="module")
def healthy_factor_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """FactorModels serving every demo model (the RandomForest needs the pickle opt-in;
    without it N1V1's /health rightly answers 503 'degraded')."""
    yield from serve_demo(
        "bentos.factor.service:FactorModels",
        demo_home,
        tmp_path_factory.mktemp("fuzz-factor"),
        TRADESERVE_ALLOW_SKLEARN_PICKLES="true",
    )


SERVER_FIXTURES = {
    "composite": "composite_server",
    "chronos": "chronos_server",
    "factor": "healthy_factor_server",
    "specialists": "specialists_server",
}


def fuzz(url: str, examples: int) -> tuple[int, Counter[str]]:
    """Run generated cases of every operation; the number run and the failures found."""
    schema = schemathesis.openapi.from_url(f"{url}/docs.json")
    failures: Counter[str] = Counter()
    cases = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,  # the same cases every run
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal cases
            cases += 1
            try:
                case.call_and_validate(base_url=url, checks=CHECKS, timeout=60)
            except (Exception, FailureGroup) as failure:  # one report for the whole service
                first = str(failure).strip().splitlines()[:12]
                failures[f"{case.method} {case.path}: " + " | ".join(first)] += 1

        run()
    return cases, failures


@pytest.mark.slow
@pytest.mark.parametrize("service", list(SERVER_FIXTURES))
def test_generated_requests_get_no_5xx_and_answers_match_the_document(
    service: str, request: pytest.FixtureRequest
) -> None:
    server: BentoServer = request.getfixturevalue(SERVER_FIXTURES[service])
    cases, failures = fuzz(server.url, EXAMPLES[service])
    assert not failures, "\n\n".join(f"{n}x {what}" for what, n in failures.items())
    assert cases >= 60, f"only {cases} cases for {service}"
    assert httpx.get(f"{server.url}/readyz").status_code == 200  # still serving


def all_numbers(document: Any, key: str) -> list[Any]:
    if isinstance(document, dict):
        found = [document[key]] if key in document else []
        return found + [x for value in document.values() for x in all_numbers(value, key)]
    if isinstance(document, list):
        return [x for value in document for x in all_numbers(value, key)]
    return []


@pytest.mark.parametrize("service", list(SERVICES))
def test_every_document_is_openapi_30(service: str) -> None:
    module, name = SERVICES[service].split(":")
    document = json.loads(
        json.dumps(getattr(importlib.import_module(module), name).openapi_spec.asdict())
    )
    assert document["openapi"].startswith("3.0")
    for key in ("exclusiveMinimum", "exclusiveMaximum", "nullable"):
        assert all(isinstance(value, bool) for value in all_numbers(document, key)), key
    assert not all_numbers(document, "const") and not all_numbers(document, "prefixItems")
    assert {"type": "null"} not in [
        option for options in all_numbers(document, "anyOf") for option in options
    ]
    # schemathesis reads it and can generate a request for every operation
    schema = schemathesis.openapi.from_dict(document)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        for result in schema.get_all_operations():
            result.ok().as_strategy().example()
