"""The models FactorModels predicts with: factor and tabular models, looked up by name.

The served-model list (``TRADESERVE_FACTOR_MODELS`` or N1V1's ``PRELOAD_MODELS``) is split
by family: factor names by their rule, every other name is a tabular model (known by its
tag). Without a list every promoted model of both families is served.

A scikit-learn model is a pickle, loaded only when the operator trusts it
(:mod:`registry.trust`). One that is listed and not trusted fails the start-up with the
message saying how to allow it; one merely found promoted is left out with that message in
the log, in its 404 and in ``/health`` (degraded), so a pickle someone registered cannot
take the factor models down with it.
"""

from __future__ import annotations

import contextlib
import logging

from bentos.shared.model_source import (
    LABEL_FAMILY,
    LABEL_NAME,
    ModelSet,
    ServedModel,
    bento_model_tags,
    source_kind,
)
from registry.catalog import list_models
from registry.errors import (
    InvalidModelNameError,
    ModelNotFoundError,
    NotPromotedError,
    TradeserveError,
)
from registry.families import Family, check_name, family_of
from registry.trust import UntrustedPickleError
from training_hooks.factor.runtime import FactorRuntime
from training_hooks.tabular.runtime import TabularRuntime

logger = logging.getLogger("tradeserve.factor")
SERVED_FAMILIES = (Family.FACTOR, Family.TABULAR)


def split_names(names: list[str] | None) -> dict[Family, list[str] | None]:
    """The served-model list by family (None: every promoted one of each)."""
    if names is None:
        return dict.fromkeys(SERVED_FAMILIES)
    split: dict[Family, list[str] | None] = {family: [] for family in SERVED_FAMILIES}
    for name in names:
        try:
            family = family_of(name)
        except InvalidModelNameError:
            check_name(name, Family.TABULAR)
            family = Family.TABULAR
        listed = split.get(family)
        if listed is None:
            raise TradeserveError(
                f"'{name}' is a {family.value} model; FactorModels serves factor and tabular "
                "models from its list (venue tables are always served)"
            )
        listed.append(name)
    return split


def promoted_names(family: Family) -> list[str]:
    """Names of the promoted ``family`` models this service sees (registry or bento)."""
    if source_kind() != "bento":
        return [s.name for s in list_models() if s.family == family.value and s.version]
    import bentoml

    tags = bento_model_tags()
    stored = bentoml.models.list() if tags is None else [bentoml.models.get(t) for t in tags]
    return [
        model.info.labels[LABEL_NAME]
        for model in stored
        if model.info.labels.get(LABEL_FAMILY) == family.value
    ]


class PredictiveModels:
    """The factor and tabular model sets of FactorModels, and what it refused to load."""

    def __init__(self, names: list[str] | None) -> None:
        self.listed = names
        self._split = split_names(names)
        self.factor: ModelSet[FactorRuntime] = ModelSet(Family.FACTOR, self._split[Family.FACTOR])
        self.tabular: ModelSet[TabularRuntime] = ModelSet(
            Family.TABULAR, self._split[Family.TABULAR]
        )
        self.refused: dict[str, str] = {}

    def load(self) -> None:
        """Load every model to serve; raise if one that must be served cannot be, or when
        nothing is promoted at all."""
        if self.listed is None:
            with contextlib.suppress(NotPromotedError):  # a tabular-only registry is fine
                self.factor.load()
        elif self._split[Family.FACTOR]:
            self.factor.load()
        listed = self._split[Family.TABULAR]
        for name in promoted_names(Family.TABULAR) if listed is None else listed:
            one: ModelSet[TabularRuntime] = ModelSet(Family.TABULAR, [name])
            try:
                one.load()
            except UntrustedPickleError as error:
                if listed is not None:
                    raise UntrustedPickleError(f"cannot serve {name}: {error}") from error
                self.refused[name] = str(error)
                logger.error("not serving %s: %s", name, error)
                continue
            self.tabular.replace(one.get(name))
        if not self.loaded():
            if self.refused:
                raise UntrustedPickleError(f"nothing else to serve: {self.refused.popitem()[1]}")
            raise NotPromotedError(
                "no promoted factor or tabular model to serve; run `tradeserve demo` or promote "
                "one with `tradeserve promote NAME VERSION`"
            )

    def required(self) -> list[ModelSet]:
        """Sets readiness waits for: those holding models once loaded."""
        return [models for models in (self.factor, self.tabular) if models.ready]

    def optional(self) -> list[ModelSet]:
        return [models for models in (self.factor, self.tabular) if models not in self.required()]

    def get(self, name: str) -> ServedModel:
        """The served model ``name``; a 404-class error saying why not otherwise."""
        for models in (self.factor, self.tabular):
            served = models.models.get(name)
            if served is not None:
                return served
        if name in self.refused:
            raise ModelNotFoundError(f"model '{name}' is not served here: {self.refused[name]}")
        served = ", ".join(self.loaded()) or "none"
        raise ModelNotFoundError(f"model '{name}' is not served here; served models: {served}")

    def served(self) -> list[ServedModel]:
        """Every loaded factor and tabular model, by name."""
        models = {**self.factor.models, **self.tabular.models}
        return [models[name] for name in sorted(models)]

    def loaded(self) -> list[str]:
        return [served.ref.name for served in self.served()]

    def missing(self) -> list[str]:
        """Models this service should serve and does not."""
        expected = self.listed if self.listed is not None else [*self.loaded(), *self.refused]
        loaded = set(self.loaded())
        return [name for name in expected if name not in loaded]
