"""Registered directories on an embedded registry, in-process: what an import registers and
promotes, and the watcher's debounce (the served API: tests/services/test_model_manager.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bentos.model_manager.directories import DirectoryManager
from bentos.model_manager.state import DirectoryStore
from bentos.model_manager.watcher import DirectoryWatcher
from registry import store
from registry.promotion import current_holder
from registry.settings import Settings
from tests.services.model_manager_world import train, write_group

BTC, ETH = "BTCUSDT_ret_1m", "ETHUSDT_ret_1m"


def manager(settings: Settings, promoted: list[str] | None = None) -> DirectoryManager:
    store_url = f"sqlite:///{settings.home_dir / 'model_manager.db'}"
    heard = None if promoted is None else promoted.extend
    return DirectoryManager(DirectoryStore(store_url), trusted_dirs=[], on_promoted=heard)


def champion(name: str) -> str | None:
    holder = current_holder(name, "champion", store.client())
    return holder.version if holder else None


def test_any_changed_file_of_a_group_is_a_new_version(
    embedded_registry: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    write_group(root, BTC, train(1))
    write_group(root, ETH, train(2))
    directories = manager(embedded_registry)
    first = directories.add("prod", root)
    assert [(v.name, v.version, v.promoted) for v in first.versions] == [
        (f"factor-{BTC}", "1", True),
        (f"factor-{ETH}", "1", True),
    ]
    assert directories.refresh("prod").versions == []  # nothing changed
    ic = root / f"{ETH}_ic.csv"
    pd.read_csv(ic).assign(Kendall_tau=0.5).to_csv(ic, index=False)  # same model, new IC
    (changed,) = directories.refresh("prod").versions
    assert (changed.name, changed.version, changed.promoted) == (f"factor-{ETH}", "2", True)
    assert champion(f"factor-{ETH}") == "2"


def test_auto_promote_off_registers_and_on_promotes_what_was_never_promoted(
    embedded_registry: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    write_group(root, BTC, train(1))
    promoted: list[str] = []
    directories = manager(embedded_registry, promoted)
    quiet = directories.add("quiet", root, auto_promote=False)
    assert [(v.version, v.promoted) for v in quiet.versions] == [("1", False)]
    assert champion(f"factor-{BTC}") is None
    assert directories.row("quiet").auto_promote is False
    again = directories.add("quiet", root, auto_promote=True)  # nothing new, never promoted
    assert [(v.name, v.version, v.promoted) for v in again.versions] == [
        (f"factor-{BTC}", "1", True)
    ]
    assert champion(f"factor-{BTC}") == "1" and f"factor-{BTC}" in promoted


def test_the_watcher_imports_a_change_once_it_held_for_the_debounce(
    embedded_registry: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    write_group(root, BTC, train(1))
    directories = manager(embedded_registry)
    directories.add("prod", root)
    watcher = DirectoryWatcher(directories, interval_s=5, debounce_s=2)
    assert watcher.tick(now=0.0) == []  # unchanged since the import
    model = root / f"{BTC}_model.json"
    train(7).save_model(model)
    assert watcher.tick(now=10.0) == []  # changed: pending
    assert watcher.tick(now=11.0) == []  # not stable for 2 s yet
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # still being written
    assert watcher.tick(now=13.0) == []  # another fingerprint: the debounce starts again
    assert watcher.tick(now=14.0) == []
    assert watcher.tick(now=15.5) == ["prod"]
    assert champion(f"factor-{BTC}") == "2"
    assert watcher.tick(now=30.0) == []
