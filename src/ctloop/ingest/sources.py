"""Run every source a view declares for one data interval: the ingest DAG's task and
`ctloop ingest` both call `ingest_view`.

Source kinds (the view's `sources:`): `files` (a drop folder, `dropfolder`), `sql` (a
table or query in another database, `sqlsource`) and `synthetic` (the demo's seeded
stream, one day per interval). Each source lands its batches in their own transactions
and the run's summary per source goes to `ingest_runs`. How a connection id becomes a URL
is the caller's business (Airflow's provider hooks, in `ctloop.orchestration.ingest`),
so this package stays free of Airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctloop.errors import CtloopError, DataValidationError
from ctloop.features.spec import FilesSource, SqlSource, SyntheticSource
from ctloop.features.view import FeatureView
from ctloop.ingest import ledger
from ctloop.ingest.dropfolder import take_folder
from ctloop.ingest.sqlsource import take_interval
from ctloop.store.dates import utc_now
from ctloop.store.features import FeatureStore

log = logging.getLogger(__name__)


COUNTS = ("batches", "taken", "rejected", "duplicates", "late_labels")
"""The run summary's counts, per source and in total."""


@dataclass(frozen=True)
class Interval:
    """A data interval `[start, end)` as naive UTC; either end may be open (`ctloop ingest`
    without `--since`: SQL sources read from their watermark)."""

    start: dt.datetime | None
    end: dt.datetime | None

    def days(self) -> list[dt.date]:
        """The days the synthetic stream lands for this interval: as many as the interval
        is long (at least one), from the day it starts. A daily schedule's interval runs
        from 01:00 to 01:00: it lands the day it starts, not two."""
        if self.start is None or self.end is None:
            raise CtloopError("the synthetic source needs an interval with a start and an end")
        count = max(1, round((self.end - self.start) / dt.timedelta(days=1)))
        return [self.start.date() + dt.timedelta(days=i) for i in range(count)]


@dataclass
class SourceSummary:
    """What one source did in one run (also one row of `ingest_runs`)."""

    source: str
    kind: str
    batches: int = 0
    taken: int = 0
    rejected: int = 0
    duplicates: int = 0
    late_labels: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestSummary:
    """The run's summary: per source, and totals (the DAG's XCom and Asset event extra)."""

    view: str
    run_id: str
    interval: Interval
    sources: list[SourceSummary]

    @property
    def taken(self) -> int:
        """Rows landed by every source together."""
        return sum(s.taken for s in self.sources)

    @property
    def landed(self) -> bool:
        """Whether rows (features or labels) landed: only then is the view's Asset updated."""
        return self.taken > 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values for XCom, the Asset event and `--json`."""

        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        totals = {k: sum(getattr(s, k) for s in self.sources) for k in COUNTS}
        return {
            "view": self.view,
            "run_id": self.run_id,
            "interval_start": iso(self.interval.start),
            "interval_end": iso(self.interval.end),
            **totals,
            "sources": [asdict(s) for s in self.sources],
        }


def _files(
    store: FeatureStore, view: FeatureView, source: FilesSource, data_dir: Path, run_id: str
) -> SourceSummary:
    done = take_folder(store, view, source, data_dir, run_id)
    return SourceSummary(
        source.name, "files", len(done.files), done.taken, done.rejected, done.duplicates,
        done.late_labels,
        {"files": [{k: f[k] for k in ("file_name", "outcome", "rows_taken", "rows_rejected",
                                      "reason")} for f in done.files]},
    )  # fmt: skip


def _sql(
    store: FeatureStore,
    view: FeatureView,
    source: SqlSource,
    interval: Interval,
    url_of: Callable[[str], str],
    run_id: str,
) -> SourceSummary:
    until = interval.end or utc_now()
    done = take_interval(store, view, source, url_of(source.conn_id), interval.start, until,
                         run_id)  # fmt: skip
    detail = {"rows_read": done.rows_read, "since": done.since and done.since.isoformat(),
              "until": until.isoformat(), "refused": done.refused,
              "watermark": done.watermark and done.watermark.isoformat(),
              "problems": done.problems}  # fmt: skip
    return SourceSummary(source.name, "sql", 1, done.taken, done.rejected, done.duplicates,
                         done.late_labels, detail)  # fmt: skip


def _synthetic(
    store: FeatureStore, view: FeatureView, source: SyntheticSource, interval: Interval,
    overrides: dict[str, int],
) -> SourceSummary:  # fmt: skip
    from ctloop.ingest.synth import land_synthetic_day  # (b) numpy stream, only when used

    rows = overrides.get("rows_per_day") or source.rows_per_day
    seed = overrides.get("seed", source.seed)
    url = store.url.render_as_string(hide_password=False)
    days = [land_synthetic_day(view.name, day, rows, seed, url) for day in interval.days()]
    taken = sum(d["feature_rows"] + d["labels"] for d in days)
    late = sum(d["labels"] for d in days)
    summary = SourceSummary(source.name, "synthetic", len(days), taken, 0, 0, late)
    summary.detail = {"days": days}
    return summary


def ingest_view(
    view: FeatureView,
    store: FeatureStore,
    interval: Interval,
    *,
    run_id: str,
    data_dir: Path,
    url_of: Callable[[str], str],
    synthetic: dict[str, int] | None = None,
) -> IngestSummary:
    """Run every source of the view for this interval and record the run per source.

    A source that is down raises (`StoreUnavailableError`: the task fails and Airflow
    retries); what other sources landed before stays landed, each batch whole. A SQL
    interval refused for bad rows (partial loads off) is recorded, then raises a
    `DataValidationError` so the run fails visibly; its rows stay in the source, and a
    re-run once fixed reads them again.
    """
    if not view.sources:
        raise CtloopError(
            f"view '{view.name}' declares no sources: add a 'sources:' list to its YAML "
            "(kind files, sql or synthetic)"
        )
    store.init([view])
    summaries: list[SourceSummary] = []
    try:
        for source in view.sources:
            if isinstance(source, FilesSource):
                summaries.append(_files(store, view, source, data_dir, run_id))
            elif isinstance(source, SqlSource):
                summaries.append(_sql(store, view, source, interval, url_of, run_id))
            else:
                summaries.append(_synthetic(store, view, source, interval, synthetic or {}))
    finally:
        ledger.record_runs(store, [
            ledger.RunEntry(view.name, s.source, s.kind, interval.start, interval.end, run_id,
                            s.batches, s.taken, s.rejected, s.duplicates, s.late_labels)
            for s in summaries
        ])  # fmt: skip
    summary = IngestSummary(view.name, run_id, interval, summaries)
    totals = summary.as_dict()
    log.info("ingest %s %s: taken %d, rejected %d, duplicates %d, late labels %d", view.name,
             run_id, totals["taken"], totals["rejected"], totals["duplicates"],
             totals["late_labels"])  # fmt: skip
    for s in summaries:
        log.info("  source %s (%s): %d batch(es), taken %d, rejected %d, duplicates %d, "
                 "late labels %d", s.source, s.kind, s.batches, s.taken, s.rejected,
                 s.duplicates, s.late_labels)  # fmt: skip
    refused = [s for s in summaries if s.kind == "sql" and s.detail.get("refused")]
    if refused:
        raise DataValidationError(
            "; ".join(f"source '{s.source}': {s.detail['refused']}" for s in refused)
        )
    return summary
