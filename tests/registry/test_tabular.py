"""Tabular family: any-name XGBoost and scikit-learn models, their name rule, logging,
the promotion gate and the operator's opt-in to scikit-learn pickles."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from registry import store
from registry.catalog import list_models
from registry.errors import GateError, InvalidModelNameError
from registry.families import Family, check_name, family_of
from registry.loading import load_version
from registry.promotion import promote
from registry.resolve import get_version, resolve
from registry.settings import Settings
from registry.trust import UntrustedPickleError, require_sklearn_trust, trusting_sklearn_pickles
from training_hooks.factor.runtime import FactorInputError, FactorMismatchError
from training_hooks.registration import Lineage
from training_hooks.tabular.log import log_tabular
from training_hooks.tabular.runtime import TabularRuntime

FEATURES = ["spread", "imbalance", "vol"]
LINEAGE = Lineage(data_source="synthetic")


def _data(rows: int = 300, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    label = (frame["spread"] - 0.5 * frame["vol"] > 0).astype(int)
    return frame, label


def _forest(labels: list[str] | None = None) -> tuple[RandomForestClassifier, pd.DataFrame]:
    frame, label = _data()
    target = label if labels is None else label.map(dict(enumerate(labels)))
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(frame, target)
    return forest, frame


@pytest.mark.parametrize("name", ["my_model", "xgb-model", "N1V1.rf_v2", "chronos-t5-huge"])
def test_any_free_name_is_a_tabular_name(name: str) -> None:
    check_name(name, Family.TABULAR)
    with pytest.raises(InvalidModelNameError, match="family"):
        family_of(name)  # never inferred from a name: the tag says it


@pytest.mark.parametrize(
    "name", ["factor-SPX_ret_1d", "chronos-2", "regime-detector", "venue-quantiles-x", "", "a b"]
)
def test_names_of_other_families_are_not_tabular(name: str) -> None:
    with pytest.raises(InvalidModelNameError, match="tabular"):
        check_name(name, Family.TABULAR)
    if name.strip() and " " not in name:
        assert family_of(name) is not Family.TABULAR


def test_a_scikit_learn_forest_needs_the_operators_opt_in(
    embedded_registry: Settings, monkeypatch
) -> None:
    forest, frame = _forest()
    version = log_tabular("my_forest", forest, input_example=frame.head(3), lineage=LINEAGE)
    assert version.family is Family.TABULAR
    resolved = get_version("my_forest", version.version)
    assert resolved.tags["family"] == "tabular" and resolved.tags["flavor"] == "sklearn"
    assert [s.family for s in list_models() if s.name == "my_forest"] == ["tabular"]

    with pytest.raises(GateError, match="TRADESERVE_ALLOW_SKLEARN_PICKLES=true"):
        promote("my_forest", version.version, reason="test")
    with pytest.raises(UntrustedPickleError, match=store.configure().effective_tracking_uri):
        load_version(resolved)

    monkeypatch.setenv("TRADESERVE_ALLOW_SKLEARN_PICKLES", "true")
    result = promote("my_forest", version.version, reason="test")
    assert result.to_version == version.version
    runtime = load_version(resolve("my_forest")).runtime
    assert isinstance(runtime, TabularRuntime) and runtime.factors == tuple(FEATURES)
    rows = frame.sample(20, random_state=1)
    shuffled = {name: rows[name].tolist() for name in reversed(FEATURES)}
    output = runtime.output_columns(runtime.predict_rows(runtime.request_matrix(None, shuffled)))
    expected = forest.predict_proba(rows)
    np.testing.assert_array_equal(output["proba_0"], expected[:, 0])
    np.testing.assert_array_equal(output["proba_1"], expected[:, 1])
    np.testing.assert_array_equal(output["prediction"], forest.predict(rows))


def test_a_trusted_registry_needs_no_global_opt_in(embedded_registry: Settings, monkeypatch):
    forest, frame = _forest()
    version = log_tabular("listed_forest", forest, input_example=frame.head(3), lineage=LINEAGE)
    monkeypatch.setenv("TRADESERVE_TRUSTED_PICKLE_REGISTRIES", "http://other:5000")
    with pytest.raises(UntrustedPickleError):
        load_version(get_version("listed_forest", version.version))
    uri = embedded_registry.effective_tracking_uri
    monkeypatch.setenv("TRADESERVE_TRUSTED_PICKLE_REGISTRIES", f"http://other:5000, {uri}/")
    assert load_version(get_version("listed_forest", version.version)).runtime.classes == (0, 1)


def test_trust_in_a_block_ends_with_it(embedded_registry: Settings) -> None:
    with trusting_sklearn_pickles():
        require_sklearn_trust("a model this code just wrote")
    with pytest.raises(UntrustedPickleError, match="TRADESERVE_TRUSTED_PICKLE_REGISTRIES"):
        require_sklearn_trust("a model from the registry")


def test_an_xgboost_classifier_loads_natively_without_opt_in(embedded_registry: Settings):
    frame, label = _data()
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(frame, label)
    version = log_tabular("xgb-direction", model, input_example=frame.head(2), lineage=LINEAGE)
    promote("xgb-direction", version.version, reason="test")  # the gate loads it: no pickle
    runtime = load_version(resolve("xgb-direction")).runtime
    assert runtime.objective == "binary:logistic" and runtime.estimator is None
    rows = frame.head(7)
    output = runtime.output_columns(runtime.predict_rows(rows.to_numpy(dtype=np.float32)))
    np.testing.assert_allclose(output["proba_1"], model.predict_proba(rows)[:, 1], rtol=1e-6)
    np.testing.assert_array_equal(output["prediction"], model.predict(rows))


def test_a_bare_booster_takes_its_feature_order_from_the_example(embedded_registry: Settings):
    frame, label = _data()
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(frame.to_numpy(), label), 5)
    version = log_tabular("bare-booster", booster, input_example=frame.head(2), lineage=LINEAGE)
    runtime = load_version(get_version("bare-booster", version.version)).runtime
    assert runtime.factors == tuple(FEATURES)
    with pytest.raises(FactorMismatchError, match="missing factors: vol"):
        runtime.request_matrix(None, {"spread": [1.0], "imbalance": [2.0]})


def test_models_logged_by_their_users_with_mlflow_sklearn(embedded_registry: Settings, monkeypatch):
    """N1V1's users log with plain mlflow.sklearn (fitted on arrays, string labels) and tag
    the versions; the signature names the features."""
    forest, frame = _forest(labels=["down", "up"])
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(
        frame.to_numpy(), forest.predict(frame)
    )
    regressor = RandomForestRegressor(n_estimators=5, random_state=0).fit(
        frame.to_numpy(), frame["spread"]
    )
    client = MlflowClient()
    store.ensure_experiment()
    for name, model in (("user_clf", forest), ("user_reg", regressor)):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model,
                name=name,
                serialization_format="pickle",
                signature=mlflow.models.infer_signature(frame, model.predict(frame.to_numpy())),
            )
        client.create_registered_model(name, tags={"family": "tabular"})
        client.create_model_version(name, info.model_uri, tags={"family": "tabular"})
    monkeypatch.setenv("TRADESERVE_ALLOW_SKLEARN_PICKLES", "true")
    classifier = load_version(get_version("user_clf", "1")).runtime
    rows = frame.head(5).to_numpy(dtype=np.float32)
    output = classifier.output_columns(classifier.predict_rows(rows))
    assert set(output) == {"prediction", "proba_down", "proba_up"}
    np.testing.assert_array_equal(output["prediction"], forest.predict(rows))
    regression = load_version(get_version("user_reg", "1")).runtime
    assert regression.classes is None and regression.factors == tuple(FEATURES)
    np.testing.assert_allclose(
        regression.output_columns(regression.predict_rows(rows))["prediction"],
        regressor.predict(rows),
    )
    with pytest.raises(FactorInputError, match="user_reg"):
        regression.predict_rows(np.full((1, 3), np.inf, dtype=np.float32))
