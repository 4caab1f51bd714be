"""Specialists: PyTorch regime-specialist policies, batched, on GPU when present.

``POST /act`` answers action probabilities of several specialists for several
observations through an in-process adaptive batcher; ``act_batch`` is the same work as a
plain ``batchable`` endpoint, which the composite RegimeBlend service calls.
"""

from __future__ import annotations

from collections import defaultdict

import bentoml
import numpy as np

from bentos.shared.batching import AdaptiveBatcher
from bentos.shared.declare import tradeserve_service
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ModelSet, ServedModel, torch_device
from bentos.shared.runtime_config import configured_batching
from bentos.specialists.schemas import (
    ActResponse,
    Feature,
    ObservationResult,
    ObservationTask,
    ServedSpecialist,
    SpecialistActions,
    SpecialistsResponse,
)
from bentos.specialists.settings import get_specialists_settings
from registry.errors import TradeserveError
from registry.families import SPECIALIST_ROLES, Family, specialist_name
from training_hooks.specialist.runtime import ACTIONS, SpecialistRuntime

SERVICE_NAME = "Specialists"


@tradeserve_service(
    name=SERVICE_NAME,
    workers=1,
    resources={"gpu": 1},  # becomes CUDA_VISIBLE_DEVICES; CPU machines just warn
    traffic={"timeout": 30},
    # Connections of callers (RegimeBlend) to this service. BentoML's client replaces its
    # aiohttp session every 100 requests / 300 s and closes the old one under requests still
    # in flight ("Server disconnected" -> 503 under load); keep one session per worker.
    runner_connection={"max_requests": 1_000_000_000, "max_age": 31_536_000.0},
    # Internal hop of RegimeBlend: its requests are logged there (and in its decision log);
    # an access line costs ~0.7 ms of CPU per call.
    logging={"access": {"enabled": False}},
    # max_latency_ms: above this predicted queue wait the dispatcher sheds requests (500/503
    # "process is overloaded"). RegimeBlend's callers prefer a slower answer to an error:
    # queue up to 10 s (RegimeBlend's own traffic timeout, 30 s, still bounds a request).
    batching={"max_batch_size": 256, "max_latency_ms": 10_000},
)
class Specialists(ModelService):
    """Serves the promoted bull, bear, sideways and universal specialists."""

    def __init__(self) -> None:
        self.settings = get_specialists_settings()
        self.models: ModelSet[SpecialistRuntime] = ModelSet(
            Family.SPECIALIST, device=torch_device(SERVICE_NAME, tiny_models=True)
        )
        self.models.load()
        self.batcher = AdaptiveBatcher(self.run_tasks, configured_batching(SERVICE_NAME))
        self.serve(self.models)

    def served(self, role: str) -> ServedModel[SpecialistRuntime]:
        return self.models.get(specialist_name(role))

    @bentoml.api(route="/act")
    @client_errors
    async def act(
        self, observations: list[list[Feature]], specialists: list[str] | None = None
    ) -> ActResponse:
        """Action probabilities (HOLD, BUY, SELL) of each specialist for each observation."""
        roles = specialists or [role for role in SPECIALIST_ROLES if self._serves(role)]
        self._validate(observations, roles)
        tasks = [
            ObservationTask(specialist=role, observation=row)
            for role in roles
            for row in observations
        ]
        answers = await self.batcher.submit(tasks)
        failed = next((answer.error for answer in answers if answer.error), None)
        if failed is not None:  # served models changed since validation (a promotion)
            raise TradeserveError(f"{failed}; retry")
        results = {}
        for position, role in enumerate(roles):
            mine = answers[position * len(observations) : (position + 1) * len(observations)]
            probabilities = [answer.probabilities for answer in mine]
            results[role] = SpecialistActions(
                probabilities=probabilities,
                actions=[ACTIONS[int(np.argmax(p))] for p in probabilities],
                model=mine[0].model,
            )
        return ActResponse(action_order=list(ACTIONS), results=results)

    @bentoml.api(batchable=True)  # sized by the service's batching
    def act_batch(self, tasks: list[ObservationTask]) -> list[ObservationResult]:
        """Single observations from many callers (the composite), coalesced by BentoML."""
        return self.run_tasks(tasks)

    def run_tasks(self, tasks: list[ObservationTask]) -> list[ObservationResult]:
        """One model call per specialist for all queued observations; a task its model
        cannot take is answered with an error of its own."""
        results: list[ObservationResult | None] = [None] * len(tasks)
        by_role: dict[str, list[int]] = defaultdict(list)
        for index, task in enumerate(tasks):
            problem = self._task_problem(task)
            if problem is None:
                by_role[task.specialist].append(index)
            else:
                results[index] = ObservationResult(error=problem)
        for role, indices in by_role.items():
            served = self.served(role)
            batch = np.asarray([tasks[i].observation for i in indices], dtype=np.float32)
            with observe_call(SERVICE_NAME, served.ref, len(indices)):
                probabilities = served.runtime.probabilities(batch)
            for row, index in enumerate(indices):
                results[index] = ObservationResult(
                    probabilities=probabilities[row].tolist(), model=served.ref
                )
        return results  # type: ignore[return-value]

    def _task_problem(self, task: ObservationTask) -> str | None:
        if not self._serves(task.specialist):
            return f"the {task.specialist} specialist is not served"
        return self.served(task.specialist).runtime.width_problem(task.observation)

    @bentoml.api(route="/models")
    def served_models(self) -> SpecialistsResponse:
        """Served specialists with their version, feature order and device."""
        return SpecialistsResponse(
            action_order=list(ACTIONS),
            specialists=[
                ServedSpecialist(
                    role=served.runtime.role,
                    model=served.ref,
                    features=list(served.runtime.feature_names),
                    parameters=served.runtime.parameter_count,
                    device=str(served.runtime.device),
                )
                for served in self.models.models.values()
            ],
        )

    def _serves(self, role: str) -> bool:
        return specialist_name(role) in self.models.models

    def _validate(self, observations: list[list[float]], roles: list[str]) -> None:
        if not observations:
            raise TradeserveError("no observations; send at least one feature row")
        limit = self.settings.max_observations
        if len(observations) * max(len(roles), 1) > limit:
            raise TradeserveError(
                f"{len(observations)} observations x {len(roles)} specialists exceeds the "
                f"limit of {limit} per request"
            )
        if not roles:
            raise TradeserveError("no specialist requested")
        for role in roles:
            self.served(role).runtime.check_observations(observations)
