"""A live download that cannot reach the registry is transient (DownloadError), with its
cause in the message, and leaves no files; the backoff between tries."""

from __future__ import annotations

import pytest

from bentos.shared.live import MAX_BACKOFF_S, backoff
from bentos.shared.live_download import Download, DownloadError
from harness.ports import free_port
from registry.families import Family
from registry.resolve import ResolvedVersion
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris


def test_an_unreachable_registry_is_a_transient_download_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    get_settings.cache_clear()
    try:
        job = Download(
            ResolvedVersion(name="factor-X_ret_1d", version="3", family=Family.FACTOR, alias=None)
        ).start()
        with pytest.raises(DownloadError) as failure:
            job.wait(120)
    finally:
        get_settings.cache_clear()
    message = str(failure.value)
    assert message.startswith("download of factor-X_ret_1d version 3 failed: ")
    assert "cannot reach the MLflow registry" in message
    assert not job.folder.exists()


def test_backoff_doubles_from_the_interval_up_to_its_cap() -> None:
    assert [backoff(1, failures) for failures in range(8)] == [1, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(60, 3) == 60  # never shorter than the poll interval itself
    assert MAX_BACKOFF_S == 30
