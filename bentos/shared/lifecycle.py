"""What every tradeserve service does around its models, written once.

A service class derives from :class:`ModelService`, is declared with
``bentos.shared.declare.tradeserve_service``, loads its :class:`ModelSet` objects in
``__init__`` and hands them to :meth:`ModelService.serve`. That gives it ``/readyz`` (true
once every required set is loaded), live promotion (started by ``serve``, stopped at
shutdown) and keeps the objects of start-up out of the garbage collector's full passes; the
declaration adds the ``/admin`` routes over its sets, the request size limit and optional
API-key auth.
"""

from __future__ import annotations

import gc
from typing import ClassVar

import bentoml

from bentos.shared.live import LiveUpdater, start_live_updates
from bentos.shared.model_source import ModelSet


class ModelService:
    """Base of tradeserve services: served model sets, readiness and live promotion."""

    service_name: ClassVar[str]  # the BentoML service name, set by tradeserve_service
    live: LiveUpdater | None = None

    def serve(self, *required: ModelSet, optional: tuple[ModelSet, ...] = ()) -> None:
        """Serve loaded ``required`` sets (readiness waits for them) and ``optional`` ones,
        following their promotions when live mode is on."""
        self._required = list(required)
        self._sets = [*required, *optional]
        self.live = start_live_updates(self.service_name, *self._sets)
        # A worker holds ~350k objects once MLflow, torch, pandas and the models are loaded;
        # a full garbage collection walks them all (~250 ms on these CPUs) and stalls every
        # request in flight: the P99 of the composite. Start-up objects live as long as the
        # worker, so move them out of the collector's reach.
        gc.freeze()

    def model_sets(self) -> list[ModelSet]:
        """Every set of models served in this process (for live promotion and /admin)."""
        return self._sets

    def __is_ready__(self) -> bool:
        return all(models.ready for models in self._required)

    @bentoml.on_shutdown
    def stop_live_updates(self) -> None:
        if self.live is not None:
            self.live.stop()
