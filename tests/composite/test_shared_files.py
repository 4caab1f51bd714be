"""RegimeBlend's shared files on S3 (a moto server): market data mirrored from an s3://
prefix into the folder decisions read, and pruned decisions archived there as Parquet."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bentos.regime_blend.decision_log import DecisionLog
from bentos.regime_blend.market import MarketMirror
from bentos.regime_blend.settings import BlendSettings
from bentos.regime_blend.state.db import StateDatabase
from bentos.regime_blend.state.retention import Maintenance
from bentos.regime_blend.storage import mirror_prefix
from harness.s3 import S3Endpoint, moto_s3
from tests.composite.test_regime_blend_logic import record
from training_hooks.market_data import MarketDataStore


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3("tradeserve-shared") as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """boto3 in this process talks to the moto server (as the service's env would say)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    return s3


def bars(days: int, start: float) -> bytes:
    index = pd.bdate_range("2020-01-01", periods=days, name="date")
    close = start + pd.Series(range(days), index=index, dtype=float)
    frame = pd.DataFrame(
        {"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1e6}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def test_market_data_is_mirrored_from_an_s3_prefix(s3_env: S3Endpoint, tmp_path: Path) -> None:
    client = s3_env.client()
    client.put_object(Bucket=s3_env.bucket, Key="daily/SPX.parquet", Body=bars(30, 100.0))
    client.put_object(Bucket=s3_env.bucket, Key="daily/notes.txt", Body=b"not market data")
    uri = f"s3://{s3_env.bucket}/daily"
    settings = BlendSettings(market_data_uri=uri, state_dir=tmp_path / "state")
    folder = settings.market_path
    assert folder == tmp_path / "state" / "market_data"
    mirror = MarketMirror(uri, folder, interval_s=3600).start()
    try:
        store = MarketDataStore(folder)
        assert store.symbols() == ["SPX"]
        assert store.load("SPX")["close"].iloc[-1] == 129.0
        assert mirror_prefix(uri, folder, (".parquet",)) == []  # unchanged: nothing fetched
        client.put_object(Bucket=s3_env.bucket, Key="daily/SPX.parquet", Body=bars(31, 200.0))
        assert mirror_prefix(uri, folder, (".parquet",)) == ["SPX.parquet"]
        assert MarketDataStore(folder).load("SPX")["close"].iloc[-1] == 230.0
    finally:
        mirror.stop()


def test_a_folder_uri_is_read_in_place(tmp_path: Path) -> None:
    settings = BlendSettings(market_data_uri=str(tmp_path / "shared"))
    assert settings.market_path == tmp_path / "shared"


def test_pruned_decisions_are_archived_to_s3(s3_env: S3Endpoint, tmp_path: Path) -> None:
    db = StateDatabase(f"sqlite:///{tmp_path / 'state.db'}")
    log = DecisionLog(db)
    old = [record(i) for i in range(5)]  # 2026-01-01
    recent = record(9).model_copy(
        update={"created_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    )

    async def append_all() -> None:
        await asyncio.gather(*(log.append(r) for r in [*old, recent]))

    uri = f"s3://{s3_env.bucket}/decisions"
    try:
        asyncio.run(append_all())
        report = Maintenance(db, 60, retention_days=7, export_uri=uri).run_once()
        assert report is not None and report.deleted == 5
        [key] = s3_env.object_keys("decisions/")
        assert report.files == [f"s3://{s3_env.bucket}/{key}"] and key.endswith(".parquet")
        archived = pq.read_table(io.BytesIO(s3_env.read(key))).to_pylist()
        assert {row["decision_id"] for row in archived} == {r.decision_id for r in old}
        assert log.get(recent.decision_id) == recent
    finally:
        log.close()
        db.close()
