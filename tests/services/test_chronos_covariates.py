"""Chronos-2 covariates and multivariate targets on a served ChronosForecaster (demo registry).

Served forecasts equal what the registered Chronos-2 version's own pipeline answers for the
same dict input (``Chronos2Pipeline.predict_quantiles``, loaded as the service loads it); T5
and Bolt refuse covariates and multivariate targets with a 400 naming the model that can.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from registry.loading import load_version
from registry.resolve import resolve

HORIZON = 12
LEVELS = [0.1, 0.5, 0.9]
rng = np.random.default_rng(21)


def walk(length: int, start: float = 50.0) -> list[float]:
    return (start + np.cumsum(rng.normal(size=length))).round(4).tolist()


def covariates(length: int) -> dict[str, list[Any]]:
    """A numeric and a categorical covariate over ``length`` steps."""
    return {
        "rate": (rng.normal(size=length) * 3).round(4).tolist(),
        "session": rng.choice(["asia", "europe", "us"], size=length).tolist(),
    }


SERIES_A = {"target": walk(60), "past_covariates": covariates(60)}
SERIES_A["future_covariates"] = covariates(HORIZON)
SERIES_B = {"target": walk(45, 20.0), "past_covariates": covariates(45)}
SERIES_B["future_covariates"] = covariates(HORIZON)
SERIES_C = {"target": walk(50, 80.0)}  # no covariates: another schema in the same request


def forecast(
    url: str, inputs: list[dict], model: str = "chronos-2", **extra: Any
) -> httpx.Response:
    parameters = {"prediction_length": HORIZON, "quantile_levels": LEVELS, "model": model}
    return httpx.post(
        f"{url}/forecast", json={"inputs": inputs, "parameters": parameters | extra}, timeout=60
    )


def as_pipeline_input(series: dict[str, Any]) -> dict[str, Any] | np.ndarray:
    """The Chronos-2 input of a request series: numpy arrays, strings as numpy str arrays."""
    if "past_covariates" not in series:
        return np.asarray(series["target"])
    item = {"target": np.asarray(series["target"])}
    for key in ("past_covariates", "future_covariates"):
        if key in series:
            item[key] = {name: np.asarray(values) for name, values in series[key].items()}
    return item


def pipeline_forecasts(series: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    """Per series: "mean" [V, H] and each level [V, H], from one pipeline call."""
    pipeline = load_version(resolve("chronos-2")).runtime.pipeline
    quantiles, mean = pipeline.predict_quantiles(
        [as_pipeline_input(item) for item in series],
        prediction_length=HORIZON,
        quantile_levels=LEVELS,
    )
    return [
        {"mean": m.numpy(), **{str(level): q[..., i].numpy() for i, level in enumerate(LEVELS)}}
        for q, m in zip(quantiles, mean, strict=True)
    ]


def assert_same(served: dict[str, Any], expected: dict[str, np.ndarray], flat: bool) -> None:
    for key in ["mean", *map(str, LEVELS)]:
        reference = expected[key][0] if flat else expected[key]
        np.testing.assert_allclose(served[key], reference, rtol=1e-4, atol=1e-4)


def test_covariates_are_served_as_the_pipeline_forecasts_them(
    chronos_server, demo_registry
) -> None:
    response = forecast(chronos_server.url, [SERIES_A, SERIES_B, SERIES_C])
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert response.json()["model"]["name"] == "chronos-2"

    # Chronos-2 takes one input schema per call: A and B together, C on its own.
    expected = [*pipeline_forecasts([SERIES_A, SERIES_B]), *pipeline_forecasts([SERIES_C])]
    for item, reference in zip(served, expected, strict=True):
        assert len(item["mean"]) == HORIZON
        assert_same(item, reference, flat=True)

    # ... and the covariates matter: the same targets alone give other forecasts.
    plain = forecast(chronos_server.url, [{"target": SERIES_A["target"]}]).json()["predictions"]
    assert not np.allclose(plain[0]["0.5"], served[0]["0.5"], atol=1e-3)


def test_multivariate_target_gets_one_forecast_per_variate(chronos_server, demo_registry) -> None:
    series = {
        "target": [walk(40), walk(40, 10.0), [None, *walk(39, 5.0)]],
        "past_covariates": {"rate": covariates(40)["rate"]},
    }
    response = forecast(chronos_server.url, [series])
    assert response.status_code == 200, response.text
    served = response.json()["predictions"][0]
    assert np.asarray(served["mean"]).shape == (3, HORIZON)
    assert np.asarray(served["0.9"]).shape == (3, HORIZON)
    assert_same(served, pipeline_forecasts([series])[0], flat=False)


def test_forecast_series_takes_covariates_too(chronos_server, demo_registry) -> None:
    task = {
        "model": "chronos-2",
        "prediction_length": HORIZON,
        "quantile_levels": LEVELS,
        "target": SERIES_B["target"],
        "past_covariates": SERIES_B["past_covariates"],
        "future_covariates": SERIES_B["future_covariates"],
    }
    response = httpx.post(
        f"{chronos_server.url}/forecast_series", json={"tasks": [task]}, timeout=60
    )
    assert response.status_code == 200, response.text
    answer = response.json()[0]
    assert_same(
        {"mean": answer["mean"], **answer["quantiles"]},
        pipeline_forecasts([SERIES_B])[0],
        flat=True,
    )


def with_change(series: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**series, **changes}


TARGET = SERIES_A["target"]
PAST, FUTURE = SERIES_A["past_covariates"], SERIES_A["future_covariates"]
BAD = [
    ("chronos-bolt-tiny", SERIES_A, "need a chronos-2 model ('chronos-2')"),
    ("chronos-t5-tiny", with_change(SERIES_A, past_covariates=None), "chronos-2"),
    ("chronos-bolt-tiny", {"target": [TARGET, TARGET]}, "multivariate targets"),
    (
        "chronos-2",
        with_change(SERIES_A, past_covariates={**PAST, "rate": PAST["rate"][:-1]}),
        "past covariate 'rate' has 59 values; it needs 60",
    ),
    (
        "chronos-2",
        with_change(SERIES_A, future_covariates={**FUTURE, "rate": [1.0] * 20}),
        "future covariate 'rate' has 20 values; it needs 12 (prediction_length)",
    ),
    (
        "chronos-2",
        with_change(SERIES_A, future_covariates={"wind": [1.0] * HORIZON}),
        "['wind'] have no past values",
    ),
    (
        "chronos-2",
        with_change(SERIES_A, future_covariates={"session": [1.5] * HORIZON}),
        "is numeric but its past values are categorical",
    ),
    (
        "chronos-2",
        with_change(SERIES_A, past_covariates={**PAST, "rate": [1e300] * 60}),
        "beyond +-1e+15",
    ),
    ("chronos-2", {"target": [*TARGET[:-1], 1e300]}, "target has 1e+300 at position 59"),
    (
        "chronos-2",
        with_change(SERIES_A, past_covariates={**PAST, "rate": [*PAST["rate"][:-1], "Infinity"]}),
        "past covariate 'rate' contains an infinite value at position 59",
    ),
    ("chronos-2", {"target": [TARGET, TARGET[:10]]}, "need the same length; got lengths [10, 60]"),
]


@pytest.mark.parametrize(("model", "series", "message"), BAD)
def test_bad_covariates_get_a_clear_400(chronos_server, model, series, message) -> None:
    response = forecast(chronos_server.url, [series], model=model)
    assert response.status_code == 400, response.text
    assert message.lower() in response.text.lower()
