"""The MLflow model-version description: what a UI user reads on the version page.

One markdown page per version, rendered from what the registry holds: family, lineage (run,
source, training window, data digest), key metrics (walk-forward ones from
``tradeserve evaluate`` first), the gate result (``validation_status`` and why) and the
promotion history from the audit tags (who, when, why). The tags stay the source of truth
(``tradeserve history`` reads them); the description is rewritten from them whenever they
change: at registration, at each gate run, promotion and rollback, and after an evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from registry import audit, store
from registry.errors import TradeserveError
from registry.model_metrics import VersionMetric, logged_model_id, version_metrics

logger = logging.getLogger(__name__)

MAX_CHARS = 5000  # MLflow's model_versions.description column (String(5000))
FIGURE_TAG = "tradeserve.figure"  # run tag: artifact path of the run's figure, if any
VALIDATION_TAG = "validation_status"  # written by the gate (registry.promotion), read here
VALIDATION_ERROR_TAG = "validation_error"
LINEAGE_TAGS = ("data_source", "code_version")
# Listed first when present: the walk-forward results `tradeserve evaluate` logs on models.
KEY_METRICS = (
    "sharpe",
    "total_return",
    "max_drawdown",
    "turnover",
    "trades",
    "buy_and_hold_sharpe",
    "buy_and_hold_total_return",
)
_WINDOW_TAGS = ("data_window_start", "data_window_end")


class RunRef(BaseModel):
    """A run the page links to."""

    run_id: str
    experiment_id: str
    name: str | None = None
    figure: str | None = None  # artifact path of its figure (FIGURE_TAG)

    @property
    def link(self) -> str:
        """A link the MLflow UI resolves (its routes live in the URL fragment)."""
        label = _cell(self.name or self.run_id[:12])
        return f"[{label}](#/experiments/{self.experiment_id}/runs/{self.run_id})"


def render(
    version: ModelVersion,
    entries: Iterable[audit.AuditEntry],
    metrics: Mapping[str, VersionMetric],
    runs: Mapping[str, RunRef],
    *,
    max_history: int = 12,
    max_metrics: int = 16,
) -> str:
    """The markdown description of ``version`` (at most :data:`MAX_CHARS` characters)."""
    tags = dict(version.tags or {})
    number = str(version.version)
    mine = [e for e in entries if e.to_version == number or (e.from_version == number and e.passed)]
    text = _page(version, tags, mine, metrics, runs, max_history, max_metrics)
    while len(text) > MAX_CHARS and (max_history > 3 or max_metrics > 6):
        max_history, max_metrics = max(3, max_history // 2), max(6, max_metrics // 2)
        text = _page(version, tags, mine, metrics, runs, max_history, max_metrics)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 2] + " …"


def _page(
    version: ModelVersion,
    tags: dict[str, str],
    entries: list[audit.AuditEntry],
    metrics: Mapping[str, VersionMetric],
    runs: Mapping[str, RunRef],
    max_history: int,
    max_metrics: int,
) -> str:
    family = tags.get("family", "unknown")
    created = _time(version.creation_timestamp)
    parts = [
        f"**{_cell(version.name)}** version {version.version} · family `{family}` · "
        f"registered {created}",
        _gate(str(version.version), tags, entries),
        _history(version, entries, max_history),
        _lineage(version, tags, runs),
        _metrics(version, metrics, runs, max_metrics),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"


def _gate(number: str, tags: dict[str, str], entries: list[audit.AuditEntry]) -> str:
    status = tags.get(VALIDATION_TAG, "pending")
    lines = [f"#### Gate: {_cell(status)}"]
    if status == "failed":
        lines.append(f"Reason: {_cell(tags.get(VALIDATION_ERROR_TAG, 'not recorded'))}")
    elif status == "pending":
        lines.append("Not validated yet: `tradeserve promote NAME VERSION` runs the gate.")
    last = next((e for e in reversed(entries) if e.to_version == number and e.passed), None)
    if status == "passed" and last is not None:
        lines.append(f"Last passed {_stamp(last.time)} ({last.event} by {_cell(last.actor)}).")
    return "\n\n".join(lines)


def _history(version: ModelVersion, entries: list[audit.AuditEntry], limit: int) -> str:
    if not entries:
        return "#### Promotions\n\nNever promoted."
    rows = [
        "| time (UTC) | event | alias | change | by | gate | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = entries[-limit:]
    for e in shown:
        replaced = e.to_version != str(version.version)
        event = f"replaced ({e.event})" if replaced else e.event
        before = f"v{e.from_version}" if e.from_version else "none"
        change = f"{before} → v{e.to_version}"
        gate = "passed" if e.passed else "refused: " + "; ".join(e.problems)
        rows.append(
            f"| {_stamp(e.time, zone=False)} | {event} | {_cell(e.alias)} | {change} | "
            f"{_cell(e.actor)} | {_cell(gate)} | {_cell(e.reason or '')} |"
        )
    older = len(entries) - len(shown)
    more = f"\n\n{older} earlier entries: `tradeserve history {version.name}`." if older else ""
    return "#### Promotions\n\n" + "\n".join(rows) + more


def _lineage(version: ModelVersion, tags: dict[str, str], runs: Mapping[str, RunRef]) -> str:
    rows = ["| | |", "|---|---|"]
    training = runs.get(version.run_id or "")
    if training is not None:
        rows.append(f"| training run | {training.link} |")
    elif version.run_id:
        rows.append(f"| training run | `{version.run_id}` |")
    model_id = logged_model_id(version)
    if model_id and training is not None:
        rows.append(
            f"| logged model | [{model_id}](#/experiments/{training.experiment_id}/models/"
            f"{model_id}) |"
        )
    rows.append(f"| source | `{_cell(version.source or '-')}` |")
    for key in LINEAGE_TAGS:
        if key in tags:
            rows.append(f"| {key.replace('_', ' ')} | {_cell(tags[key])} |")
    start, end = (tags.get(key) for key in _WINDOW_TAGS)
    if start or end:
        rows.append(f"| training window | {start or '…'} .. {end or '…'} |")
    for key in sorted(tags):
        if "digest" in key:
            rows.append(f"| {_cell(key.replace('_', ' '))} | `{_cell(tags[key])}` |")
    return "#### Lineage\n\n" + "\n".join(rows)


def _metrics(
    version: ModelVersion,
    metrics: Mapping[str, VersionMetric],
    runs: Mapping[str, RunRef],
    limit: int,
) -> str:
    if not metrics:
        return "#### Metrics\n\nNone logged."

    def order(item: tuple[str, VersionMetric]) -> tuple[int, bool, str]:
        key, metric = item
        rank = KEY_METRICS.index(key) if key in KEY_METRICS else len(KEY_METRICS)
        return (rank, not _from_training(version, metric), key)

    ranked = sorted(metrics.items(), key=order)
    labels: dict[str, str] = {}  # evaluation run id -> "run N"
    rows = ["| metric | value | from |", "|---|---|---|"]
    for key, metric in ranked[:limit]:
        if _from_training(version, metric):
            source = "training run"
        else:
            source = labels.setdefault(metric.run_id or "", f"run {len(labels) + 1}")
        rows.append(f"| {_cell(key)} | {metric.value:.6g} | {source} |")
    more = len(ranked) - limit
    notes = [f"{more} more on the logged model and its runs."] if more > 0 else []
    for run_id, label in labels.items():
        ref = runs.get(run_id)
        logged = max(m.timestamp for m in metrics.values() if m.run_id == run_id)
        notes.append(f"{label}: {ref.link if ref else f'`{run_id}`'}, {_time(logged)}")
    figures = [
        f"![{_cell(ref.name or 'figure')}](get-artifact?path={ref.figure}&run_uuid={ref.run_id})"
        for run_id in labels
        if (ref := runs.get(run_id)) is not None and ref.figure
    ]
    return "\n\n".join(["#### Metrics", "\n".join(rows), *notes, *figures[:1]])


def _from_training(version: ModelVersion, metric: VersionMetric) -> bool:
    return metric.run_id in (None, version.run_id)


def write(name: str, version: str, client: MlflowClient | None = None) -> str:
    """Render the description of ``name`` version ``version`` and store it; returns it."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"version {version} of model '{name}'"):
        model = mlflow_client.get_registered_model(name)
        versions = store.versions_of(mlflow_client, name)
        current = next((v for v in versions if str(v.version) == str(version)), None)
        if current is None:
            current = mlflow_client.get_model_version(name, version)
        entries = audit.model_history(versions, dict(model.aliases or {}))
        metrics = version_metrics(current, mlflow_client)
        run_ids = {current.run_id, *(m.run_id for m in metrics.values())} - {None}
        runs = {run_id: ref for run_id in run_ids if (ref := _run_ref(run_id, mlflow_client))}
        text = render(current, entries, metrics, runs)
        if (current.description or "") != text:
            mlflow_client.update_model_version(name, str(version), description=text)
    return text


def refresh(name: str, versions: Iterable[str], client: MlflowClient | None = None) -> None:
    """:func:`write` each of ``versions``, best effort: the tags it renders are already
    stored, so a failure here is logged and never undoes or fails the change itself."""
    for version in dict.fromkeys(str(v) for v in versions):
        try:
            write(name, version, client)
        except (MlflowException, TradeserveError) as error:
            logger.warning("description of '%s' version %s not updated: %s", name, version, error)


def _run_ref(run_id: str, client: MlflowClient) -> RunRef | None:
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if store.is_not_found(error):
            return None
        raise
    return RunRef(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        name=run.info.run_name,
        figure=run.data.tags.get(FIGURE_TAG),
    )


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell: one line, no pipes, no HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def _time(millis: int | None) -> str:
    return _stamp(datetime.fromtimestamp(millis / 1000, UTC)) if millis else "-"


def _stamp(moment: datetime, zone: bool = True) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M" + (" UTC" if zone else ""))
