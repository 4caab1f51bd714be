"""What ModelManager serves, wired once: the registered directories and the promoted factor
versions of their groups, their ONNX files, the venue tables and their Redis publisher.

Factor and venue versions are :class:`~bentos.shared.model_source.ModelSet` s, so live mode
follows promotions made anywhere (``tradeserve promote``/``rollback``, the MLflow UI) as in
every service; an import's own promotions are loaded at once (:meth:`follow`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bentos.model_manager.bodies import BodyCache
from bentos.model_manager.compat import SymbolNotFoundError, unique_record
from bentos.model_manager.directories import DirectoryManager
from bentos.model_manager.onnx import OnnxModels
from bentos.model_manager.publisher import RedisPublisher
from bentos.model_manager.schemas import Snapshot
from bentos.model_manager.settings import ModelManagerSettings
from bentos.model_manager.state import DirectoryStore
from bentos.model_manager.venues import VenueTables
from bentos.model_manager.watcher import DirectoryWatcher
from bentos.shared.lineage import ModelRef
from bentos.shared.model_source import ModelSet, ServedModel
from registry.errors import NotPromotedError, TradeserveError
from registry.families import Family
from registry.resolve import resolve
from training_hooks.factor.runtime import FactorRuntime

logger = logging.getLogger("tradeserve.model_manager")


class ModelManagerCore:
    """Everything the routes use; built at start-up (scans, loads, publishes)."""

    def __init__(self, settings: ModelManagerSettings) -> None:
        self.settings = settings
        self.publisher = RedisPublisher(settings.redis_url, settings.redis_resync_s)
        self.venues = VenueTables(self.publisher, settings.venues, settings.model_roots)
        self.venues.load()
        self.factors: ModelSet[FactorRuntime] = ModelSet(Family.FACTOR)
        self.onnx = OnnxModels()
        self.bodies = BodyCache()
        self.directories = DirectoryManager(
            DirectoryStore(settings.effective_database_url), on_promoted=self.follow
        )
        self.directories.sync()
        self.watcher = DirectoryWatcher(
            self.directories, settings.watch_interval_s, settings.watch_debounce_s
        )

    def start(self) -> None:
        if self.settings.watch_enabled:
            self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        self.publisher.stop()

    def follow(self, names: Iterable[str]) -> None:
        """Serve the promoted version of each registered model named (if it has one)."""
        for name in names:
            try:
                resolved = resolve(name)
                current = self.factors.models.get(name)
                if current is not None and current.ref.version == resolved.version:
                    continue
                one: ModelSet[FactorRuntime] = ModelSet(Family.FACTOR, [name])
                one.load(kind="registry")
                self.factors.replace(one.get(name))
            except NotPromotedError:
                continue
            except TradeserveError as error:
                logger.error("cannot serve %s: %s", name, error)

    def served_ref(self, registered_name: str) -> ModelRef | None:
        served = self.factors.models.get(registered_name)
        return None if served is None else served.ref

    def served_group(
        self, model_name: str, symbol: str
    ) -> tuple[Snapshot, ServedModel[FactorRuntime]]:
        """The directory and the promoted version serving ``symbol``'s one group."""
        snapshot = self.directories.snapshot(model_name)
        record = unique_record(snapshot, symbol)
        served = self.factors.models.get(record.registered_name)
        if served is None:
            raise SymbolNotFoundError(
                f"symbol '{record.symbol}' of model '{model_name}' has no promoted version "
                f"({record.registered_name}); promote one with `tradeserve promote "
                f"{record.registered_name} VERSION`"
            )
        return snapshot, served
