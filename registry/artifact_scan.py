"""Read model_manager artifact directories: every group parsed and checked, nothing
registered (:mod:`registry.importer` registers what this returns).

Layout (files anywhere under the root, grouped by suffix; ``group_key`` = file name minus
suffix): ``<group>_model.json`` / ``_model.pkl``, ``_factors.txt``, ``_ic.csv``,
``_info.pkl``, plus tradeserve's pickle-free ``_info.json`` (a :class:`FactorTrainingInfo`,
written by :func:`training_hooks.factor.log.write_artifact_group`; preferred over ``_info.pkl``).
Each group becomes a version of ``factor-<group_key>``.

Pickles are never read outside the directories the operator trusts
(``TRADESERVE_TRUSTED_PICKLE_DIRS``, ``os.pathsep``-separated):

- ``_model.json`` is preferred; a group with only ``_model.pkl`` outside the trusted
  directories is an error (the model itself cannot be read).
- ``_info.pkl`` only adds training metadata, so outside the trusted directories it is
  skipped with a warning and the metadata comes from ``_ic.csv``/``_factors.txt``/the group
  key, as model_manager does when it is absent.
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xgboost as xgb
from pydantic import BaseModel, Field, ValidationError

from registry.errors import TradeserveError
from registry.trust import is_trusted, require_trusted
from training_hooks.factor.runtime import factor_model_name
from training_hooks.factor.schemas import FactorTrainingInfo, IcEntry

# What reading a half-written model, a broken CSV or a bad pickle raises.
UNREADABLE = (xgb.core.XGBoostError, pickle.UnpicklingError, EOFError, ValueError, OSError,
              ImportError, AttributeError)  # fmt: skip
SUFFIXES = {
    "model_json": "_model.json",
    "model_pkl": "_model.pkl",
    "factors_txt": "_factors.txt",
    "ic_csv": "_ic.csv",
    "info_pkl": "_info.pkl",
    "info_json": "_info.json",
    "model_onnx": "_model.onnx",
}


class ArtifactImportError(TradeserveError):
    """An artifact directory cannot be imported; nothing was registered."""


# ── parsing one group ────────────────────────────────────────────────────────────────


class ParsedGroup(BaseModel):
    """Everything needed to register one artifact group."""

    group_key: str
    name: str = Field(description="Registered model name, factor-<group_key>")
    model_json: bytes = Field(repr=False)
    sha256: str
    factors: list[str]
    ic_table: list[IcEntry]
    training_info: FactorTrainingInfo
    files: dict[str, Path] = Field(default_factory=dict, description="Its files by kind")
    warnings: list[str] = Field(default_factory=list)

    @property
    def group_sha256(self) -> str:
        """sha256 of everything a version is made of: model JSON, factors, IC, training info."""
        parts = {
            "factors": self.factors,
            "ic_table": [entry.model_dump() for entry in self.ic_table],
            "training_info": self.training_info.model_dump(),
        }
        text = json.dumps(parts, sort_keys=True).encode()
        return hashlib.sha256(self.model_json + b"\0" + text).hexdigest()


class DirectoryScan(BaseModel):
    """Every group of one artifact directory, parsed, with the directory's fingerprint."""

    root: Path
    groups: list[ParsedGroup]
    fingerprint: str
    scanned_at: str


def utc_now_iso() -> str:
    """model_manager's timestamps: UTC, whole seconds, ISO 8601 with offset."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def fingerprint(root: Path) -> str:
    """model_manager's directory fingerprint: sha256 over (relative path, size, mtime_ns) of
    every artifact file, then the file count; ``"missing"`` when ``root`` is no directory."""
    root = Path(root)
    if not root.is_dir():
        return "missing"
    hasher = hashlib.sha256()
    count = 0
    suffixes = tuple(SUFFIXES.values())
    for path in sorted(root.rglob("*")):
        if not path.name.endswith(suffixes) or not path.is_file():
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        line = f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n"
        hasher.update(line.encode("utf-8"))
        count += 1
    hasher.update(f"count={count}".encode("ascii"))
    return hasher.hexdigest()


def scan_groups(root: Path) -> dict[str, dict[str, Path]]:
    """``{group_key: {kind: path}}`` for every artifact file under ``root``."""
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        for kind, suffix in SUFFIXES.items():
            if path.name.endswith(suffix):
                groups[path.name[: -len(suffix)]][kind] = path
                break
    return dict(sorted(groups.items()))


def parse_group(
    group_key: str, files: dict[str, Path], trusted_dirs: Sequence[Path] | None = None
) -> ParsedGroup:
    """Read one group; raises :class:`ArtifactImportError` / :class:`UntrustedPickleError`."""
    warnings: list[str] = []
    model_json = _model_json(group_key, files, trusted_dirs)
    booster = xgb.Booster()
    booster.load_model(bytearray(model_json))
    info_json = _info_json(group_key, files.get("info_json"))
    info = {} if info_json else _info_pkl(files.get("info_pkl"), trusted_dirs, warnings)
    ic_rows = _ic_rows(files.get("ic_csv")) or _ic_rows_from_info(info)
    selected = info_json.selected_factors if info_json else _strings(info.get("selected_factors"))
    factors = _factors(group_key, files.get("factors_txt"), selected, booster)
    factors = _fit_feature_dim(group_key, factors, booster.num_features(), warnings)
    if booster.feature_names and list(booster.feature_names) != factors:
        warnings.append("model JSON feature names differ from the factor list; using the list")
    return ParsedGroup(
        group_key=group_key,
        name=factor_model_name(group_key),
        model_json=model_json,
        sha256=hashlib.sha256(model_json).hexdigest(),
        factors=factors,
        ic_table=[IcEntry(factor_name=r["factor_name"], kendall_tau=r["tau"]) for r in ic_rows],
        training_info=info_json or _training_info(group_key, info, ic_rows, factors),
        files=dict(files),
        warnings=warnings,
    )


def _model_json(
    group_key: str, files: dict[str, Path], trusted_dirs: Sequence[Path] | None
) -> bytes:
    if "model_json" in files:
        return files["model_json"].read_bytes()
    if "model_pkl" in files:
        model = pickle.loads(require_trusted(files["model_pkl"], trusted_dirs).read_bytes())
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        if not isinstance(booster, xgb.Booster):
            raise ArtifactImportError(
                f"{group_key}: _model.pkl holds {type(model).__name__}, not an XGBoost model"
            )
        return bytes(booster.save_raw("json"))
    raise ArtifactImportError(f"{group_key}: no _model.json or _model.pkl to import")


def _info_json(group_key: str, path: Path | None) -> FactorTrainingInfo | None:
    if path is None:
        return None
    try:
        return FactorTrainingInfo.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ArtifactImportError(f"{group_key}: invalid {path.name}: {error}") from error


def _info_pkl(
    path: Path | None, trusted_dirs: Sequence[Path] | None, warnings: list[str]
) -> dict[str, Any]:
    if path is None:
        return {}
    if not is_trusted(path, trusted_dirs):
        warnings.append(
            f"{path.name} skipped (not in a trusted directory); metadata from ic.csv/factors.txt"
        )
        return {}
    info = pickle.loads(require_trusted(path, trusted_dirs).read_bytes())
    if not isinstance(info, dict):
        warnings.append(f"{path.name} holds {type(info).__name__}, not a dict; ignored")
        return {}
    return info


def _ic_rows(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return [_ic_row(raw) for raw in csv.DictReader(handle) if raw.get("factor_name")]


def _ic_rows_from_info(info: dict[str, Any]) -> list[dict[str, Any]]:
    frame = info.get("ic_df")
    if not isinstance(frame, pd.DataFrame):
        return []
    return [_ic_row(record) for record in frame.to_dict(orient="records")]


def _ic_row(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "symbol": str(raw.get("symbol") or "").strip(),
        "factor_name": str(raw.get("factor_name") or "").strip(),
        "return_name": str(raw.get("return_name") or "").strip(),
        "tau": _float(raw.get("Kendall_tau")),
    }


def _factors(
    group_key: str, path: Path | None, selected: list[str], booster: xgb.Booster
) -> list[str]:
    """factors.txt (line order = dimension), else info's selected factors, else names."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        factors = [line.strip() for line in lines if line.strip()]
    else:
        factors = selected
    factors = factors or list(booster.feature_names or [])
    if not factors:
        raise ArtifactImportError(
            f"{group_key}: no factor list (_factors.txt, info.pkl selected_factors or booster "
            "feature names)"
        )
    return factors


def _fit_feature_dim(
    group_key: str, factors: list[str], feature_dim: int, warnings: list[str]
) -> list[str]:
    """Factors for dims < feature_dim (model_manager's mapping); warn on a count mismatch."""
    if len(factors) == feature_dim:
        return factors
    warnings.append(f"factors count {len(factors)} differs from feature_dim {feature_dim}")
    if len(factors) < feature_dim:
        raise ArtifactImportError(
            f"{group_key}: the model reads {feature_dim} features but only {len(factors)} "
            "factors are named; cannot serve it by factor name"
        )
    return factors[:feature_dim]


def _training_info(
    group_key: str, info: dict[str, Any], ic_rows: list[dict[str, Any]], factors: list[str]
) -> FactorTrainingInfo:
    window = info.get("train_window")
    start_ts, end_ts = (window[0], window[1]) if isinstance(window, list | tuple) else (None, None)
    head, _, rest = group_key.partition("_")
    first_ic = ic_rows[0] if ic_rows else {}
    selected = _strings(info.get("selected_factors"))
    return FactorTrainingInfo(
        symbol=str(info.get("symbol") or first_ic.get("symbol") or head),
        return_name=str(info.get("return_name") or first_ic.get("return_name") or rest),
        train_start_date=_iso(info.get("train_start_date")),
        train_end_date=_iso(info.get("train_end_date")),
        train_window_start_ts=_int(start_ts),
        train_window_end_ts=_int(end_ts),
        train_samples=_int(info.get("train_samples")),
        train_time_sec=_float(info.get("train_time", info.get("train_time_sec"))),
        original_factors_count=_int(info.get("original_factors_count")),
        final_factors_count=_int(info.get("final_factors_count")) or len(factors),
        selected_factors=selected or factors,
    )


def _strings(raw: Any) -> list[str]:
    return [str(item) for item in raw or [] if item is not None]


def _float(raw: Any) -> float | None:
    try:
        return None if raw is None or raw == "" else float(raw)
    except (TypeError, ValueError):
        return None


def _int(raw: Any) -> int | None:
    try:
        return None if raw is None or raw == "" else int(raw)
    except (TypeError, ValueError):
        return None


def _iso(raw: Any) -> str | None:
    if raw is None:
        return None
    return str(raw.isoformat()) if hasattr(raw, "isoformat") else str(raw)


# ── a whole directory ──────────────────────────────────────────────────────────────


def scan_directory(root: Path, trusted_dirs: Sequence[Path] | None = None) -> DirectoryScan:
    """Parse every artifact group under ``root`` (nothing is registered); raises
    :class:`ArtifactImportError` / :class:`UntrustedPickleError` for an unusable group."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ArtifactImportError(f"{root} is not a directory")
    directory_print = fingerprint(root)
    scanned_at = utc_now_iso()
    groups = scan_groups(root)
    if not groups:
        raise ArtifactImportError(f"no model_manager artifacts under {root}")
    parsed = [_parse_or_explain(key, files, trusted_dirs) for key, files in groups.items()]
    return DirectoryScan(
        root=root, groups=parsed, fingerprint=directory_print, scanned_at=scanned_at
    )


def _parse_or_explain(
    group_key: str, files: dict[str, Path], trusted_dirs: Sequence[Path] | None
) -> ParsedGroup:
    """:func:`parse_group`, with unreadable files (a half-written model, a broken pickle)
    reported as :class:`ArtifactImportError` naming the group."""
    try:
        return parse_group(group_key, files, trusted_dirs)
    except UNREADABLE as error:
        raise ArtifactImportError(f"{group_key}: unreadable artifacts: {error}") from error
