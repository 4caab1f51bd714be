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
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService, finish_service
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ModelSet, ServedModel, torch_device
from bentos.shared.runtime_config import Batching, configured_batching
from bentos.specialists.schemas import (
    ActResponse,
    ObservationResult,
    ObservationTask,
    ServedSpecialist,
    SpecialistActions,
    SpecialistsResponse,
)
from registry.errors import TradeserveError
from registry.families import SPECIALIST_ROLES, Family, specialist_name
from training_hooks.specialists import ACTIONS

SERVICE_NAME = "Specialists"
BATCHING = configured_batching(SERVICE_NAME, Batching(max_batch_size=256, max_latency_ms=2_000))
MAX_OBSERVATIONS = 4096


@bentoml.service(name=SERVICE_NAME, resources={"gpu": 1}, traffic={"timeout": 30})
class Specialists(ModelService):
    """Serves the promoted bull, bear, sideways and universal specialists."""

    def __init__(self) -> None:
        self.models = ModelSet(
            Family.SPECIALIST, device=torch_device(SERVICE_NAME, tiny_models=True)
        )
        self.models.load()
        self.batcher = AdaptiveBatcher(self.run_tasks, BATCHING)
        self.serve(self.models)

    def served(self, role: str) -> ServedModel:
        return self.models.get(specialist_name(role))

    @bentoml.api(route="/act")
    @client_errors
    async def act(
        self, observations: list[list[float]], specialists: list[str] | None = None
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

    @bentoml.api(
        batchable=True,
        max_batch_size=BATCHING.max_batch_size,
        max_latency_ms=BATCHING.max_latency_ms,
    )
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
        width = len(self.served(task.specialist).runtime.feature_names)
        if len(task.observation) != width:
            return (
                f"the {task.specialist} specialist expects {width} features, "
                f"got {len(task.observation)}"
            )
        return None

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
        if len(observations) * max(len(roles), 1) > MAX_OBSERVATIONS:
            raise TradeserveError(
                f"{len(observations)} observations x {len(roles)} specialists exceeds the "
                f"limit of {MAX_OBSERVATIONS} per request"
            )
        if not roles:
            raise TradeserveError("no specialist requested")
        for role in roles:
            runtime = self.served(role).runtime
            width = len(runtime.feature_names)
            for index, row in enumerate(observations):
                if len(row) != width:
                    raise TradeserveError(
                        f"observations[{index}] has {len(row)} values; the {role} specialist "
                        f"expects {width}: {', '.join(runtime.feature_names)}"
                    )
        if not np.isfinite(np.asarray(observations, dtype=np.float64)).all():
            raise TradeserveError("observations contain NaN or inf")


finish_service(Specialists)
# BentoML 1.4 picks the media type of a root-model output (``list[ObservationResult]``) by
# generating its JSON schema on every response (_bentoml_sdk/io_models.py,
# IOMixin.mime_type): ~2-4 ms of CPU per act_batch call, about half of what this service
# spent per composite decision. The answer is always JSON; pin it here, so that it holds
# wherever Specialists runs (in the composite's bento or deployed on its own).
Specialists.apis["act_batch"].output_spec.media_type = "application/json"
