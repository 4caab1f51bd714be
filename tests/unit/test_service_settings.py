"""Each service's settings sit next to it (``TRADESERVE_<SERVICE>_*``); former names still work."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from bentos.chronos.settings import ChronosSettings
from bentos.factor.settings import FactorSettings
from bentos.regime_blend.settings import BlendSettings
from bentos.shared.settings import ServingSettings
from bentos.specialists.settings import SpecialistsSettings

RENAMED = [
    (ChronosSettings, "max_series_per_request", "TRADESERVE_MAX_SERIES_PER_REQUEST", "7"),
    (ChronosSettings, "max_series_length", "TRADESERVE_MAX_SERIES_LENGTH", "7"),
    (FactorSettings, "max_rows_per_request", "TRADESERVE_MAX_ROWS_PER_REQUEST", "7"),
    (BlendSettings, "specialists_url", "TRADESERVE_SPECIALISTS_URL", "http://specialists:3000"),
]
PREFIXES = {
    ChronosSettings: "TRADESERVE_CHRONOS_",
    FactorSettings: "TRADESERVE_FACTOR_",
    SpecialistsSettings: "TRADESERVE_SPECIALISTS_",
    BlendSettings: "TRADESERVE_BLEND_",
}


@pytest.mark.parametrize(("settings", "field", "old", "value"), RENAMED)
def test_former_names_still_work_and_the_new_ones_win(
    settings: type[BaseSettings], field: str, old: str, value: str, monkeypatch
) -> None:
    monkeypatch.setenv(old, value)
    assert str(getattr(settings(), field)) == value
    new = PREFIXES[settings] + field.upper()
    monkeypatch.setenv(new, "9" if value.isdigit() else "http://elsewhere:3000")
    assert str(getattr(settings(), field)) == ("9" if value.isdigit() else "http://elsewhere:3000")


def test_model_lists_keep_their_names(monkeypatch) -> None:
    monkeypatch.setenv("TRADESERVE_CHRONOS_MODELS", '["chronos-bolt-tiny"]')
    monkeypatch.setenv("TRADESERVE_FACTOR_MODELS", '["factor-SPX_ret_1d"]')
    assert ChronosSettings().models == ["chronos-bolt-tiny"]
    assert FactorSettings().models == ["factor-SPX_ret_1d"]


def test_family_knobs_left_the_shared_settings() -> None:
    family = {"max_series_per_request", "max_rows_per_request", "chronos_models", "factor_models"}
    assert not family & set(ServingSettings.model_fields)


@pytest.mark.parametrize("settings", [ServingSettings, *PREFIXES])
def test_every_setting_says_what_it_does(settings: type[BaseSettings]) -> None:
    undocumented = [name for name, field in settings.model_fields.items() if not field.description]
    assert not undocumented
