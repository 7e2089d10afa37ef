"""Commands that put data in and show it: tables, views, synthetic and sample data,
file imports, late labels, status."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ctloop.cli.app import (
    ISO_TIME,
    cli,
    parse_date,
    parse_datetime,
    settings_store,
    view_argument,
    view_named,
)
from ctloop.features.view import FeatureView, list_views
from ctloop.settings import get_settings
from ctloop.store.dates import utc_now

if TYPE_CHECKING:
    from ctloop.store.features import FeatureStore


@cli.command("init-db")
@click.argument("views", nargs=-1, metavar="[VIEW]...")
@click.option("--partition-log", is_flag=True,
              help="Partition a prediction log made before day partitions existed (MariaDB/"
                   "MySQL; copies the table once, writers wait meanwhile).")  # fmt: skip
def init_db(views: tuple[str, ...], partition_log: bool) -> None:
    """Create the feature store tables (all views when none is named); safe to repeat."""
    from ctloop.store import partitions  # (b) light CLI start

    names = list(views) or list_views()
    loaded = [view_named(n) for n in names]
    store = settings_store()
    converted = store.init(loaded)
    if converted:
        click.echo(f"converted to binary collation (keys compare as bytes): {', '.join(converted)}")
    if partition_log:
        click.echo("partitioning prediction_log by day (MariaDB copies the table) ...")
        made = partitions.convert(store)
        click.echo(f"prediction_log: {made} day partitions made" if made
                   else "prediction_log: already partitioned (or not MariaDB/MySQL)")  # fmt: skip
    elif partitions.unpartitioned_log(store):
        click.echo("prediction_log is not partitioned by day (made by an older ctloop): "
                   "retention deletes its rows one chunk at a time; `ctloop init-db "
                   "--partition-log` converts it")  # fmt: skip
    click.echo(f"feature store {store.safe_url}: tables ready for {', '.join(names)}")


def label_text(fv: FeatureView) -> str:
    """The label's kind and values in one phrase, for `show-view`."""
    label = fv.label
    if label.is_regression:
        return f"regression, values in [{label.min}, {label.max}]"
    if label.is_binary:
        return (f"binary: {', '.join(label.class_list)}; positive {label.positive_class} "
                f"at score >= {label.decision_threshold}")  # fmt: skip
    return f"multiclass: {', '.join(label.class_list)}"


@cli.command("show-view")
@view_argument
def showview_named(view: str | None) -> None:
    """Validate a feature view file and print its contract."""
    fv = view_named(view)
    click.echo(f"{fv.name}: entity {fv.entity}, event date {fv.event_date}")
    click.echo(f"label {fv.label.name} ({label_text(fv)}), metric {fv.primary_metric}")
    for f in fv.features:
        if f.is_numeric:
            spec = f"numeric [{f.min}, {f.max}]" + (" integer" if f.integer else "")
        else:
            spec = f"categorical {len(f.categories or [])} categories" + (
                " (+unseen)" if f.allow_unseen else ""
            )
        click.echo(f"  {f.name:28} {spec}{' nullable' if f.nullable else ''}")
    click.echo(f"training: {fv.training.model_dump()}")
    click.echo(f"data gate: {fv.gates.data.model_dump()}")
    click.echo(f"model gate: {fv.gates.model.model_dump()}")
    click.echo(f"drift: {fv.drift.model_dump()}")


@cli.command()
@view_argument
@click.option("--days", type=click.IntRange(min=1), default=60, show_default=True,
              help="Number of consecutive days to write.")  # fmt: skip
@click.option("--rows-per-day", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Feature rows (customers) per day.")  # fmt: skip
@click.option(
    "--start", callback=parse_date, help="First day (YYYY-MM-DD). Default: --days before today."
)
@click.option("--seed", type=int, default=7, show_default=True,
              help="Seed of the stream: the same seed writes the same rows.")  # fmt: skip
@click.option(
    "--scenario",
    type=click.Choice(["none", "covariate_shift", "concept_drift"]),
    default="none",
    show_default=True,
    help="Drift scenario that starts on --drift-start.",
)
@click.option("--drift-start", callback=parse_date, help="Day the scenario starts (YYYY-MM-DD).")
@click.option(
    "--label-delay-days",
    type=click.IntRange(min=0),
    default=None,
    help="Days until labels land. Default: the view's training.label_delay_days.",
)
@click.option(
    "--labels-until",
    callback=parse_datetime,
    metavar=ISO_TIME,
    help="Write only labels that arrived before this time (ISO 8601, UTC unless it has an "
    "offset). Default: now.",
)
@click.option("--no-labels", is_flag=True, help="Write features only.")
def generate(
    view: str | None,
    days: int,
    rows_per_day: int,
    start: dt.date | None,
    seed: int,
    scenario: str,
    drift_start: dt.date | None,
    label_delay_days: int | None,
    labels_until: dt.datetime | None,
    no_labels: bool,
) -> None:
    """Write a seeded synthetic credit-score stream into the feature store.

    Re-running the same command writes the same rows again (idempotent upserts), so the
    row counts do not change.
    """
    from ctloop.ingest.synth import Scenario, StreamConfig, stream  # (b) light CLI start

    fv = view_named(view)
    if scenario != "none" and drift_start is None:
        raise click.BadParameter("a drift scenario needs --drift-start", param_hint="--scenario")
    start = start or (dt.date.today() - dt.timedelta(days=days))
    until = labels_until or utc_now()
    config = StreamConfig(
        seed=seed,
        rows_per_day=rows_per_day,
        scenario=Scenario(scenario),
        drift_start=drift_start,
        label_delay_days=(
            fv.training.label_delay_days if label_delay_days is None else label_delay_days
        ),
    )
    store = settings_store()
    store.require_tables(fv)
    began = time.perf_counter()
    total_f = total_l = 0
    for i, (day, features, labels) in enumerate(stream(fv, start, days, config), 1):
        arrived = labels[labels["arrived_at"] < until]
        n_f, n_l = store.ingest(fv, features, None if no_labels else arrived)
        total_f += n_f
        total_l += n_l
        rate = total_f / max(time.perf_counter() - began, 1e-9)
        click.echo(
            f"[{i}/{days}] {day}: {n_f} feature rows, {n_l} labels ({rate:,.0f} rows/s so far)",
            err=True,
        )
    took = time.perf_counter() - began
    click.echo(
        f"generated {total_f} feature rows and {total_l} labels for {fv.name} "
        f"({start} .. {start + dt.timedelta(days=days - 1)}) in {took:.1f}s "
        f"({total_f / max(took, 1e-9):,.0f} rows/s)"
    )


def _echo_columns(renamed: dict[str, str], ignored: list[str]) -> None:
    """Say how an import read the header, so a wrong mapping is seen, not just its effect."""
    if renamed:
        click.echo("renamed columns: " + ", ".join(f"'{s}' -> {t}" for s, t in renamed.items()))
    if ignored:
        click.echo("ignored columns: " + ", ".join(f"'{c}'" for c in ignored))


@cli.command("import")
@click.argument("view")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--skip-bad-rows", is_flag=True, help="Import the good rows, report the bad ones.")
def import_(view: str, file: Path, skip_bad_rows: bool) -> None:
    """Validate a CSV or Parquet file against VIEW and load it into the feature and label tables.

    Columns: the entity key, the event date, every feature; optionally the label and
    `arrived_at` (when the label became known, UTC unless it has an offset; default: now).
    Header names resolve through the view's `import:` block. Nothing of a failing file
    is written unless --skip-bad-rows is given.
    """
    from ctloop.ingest.files import import_csv  # (b) light CLI start

    fv = view_named(view)
    result = import_csv(
        settings_store(), fv, file, skip_bad_rows=skip_bad_rows,
        progress=lambda line: click.echo(line, err=True),
    )  # fmt: skip
    _echo_columns(result.renamed, result.ignored)
    for problem in result.problems[:50]:
        click.echo(f"skipped {problem}", err=True)
    click.echo(
        f"{file}: {result.rows_read} rows read, {result.features_written} feature rows and "
        f"{result.labels_written} labels written, {result.skipped_rows} rows skipped"
    )


@cli.command()
@view_argument
@click.option("--days", "last_days", type=int, default=14, show_default=True,
              help="How many of the newest days to list (0: all).")  # fmt: skip
def status(view: str | None, last_days: int) -> None:
    """Tables, row counts per day and label coverage."""
    fv = view_named(view)
    store = settings_store()
    click.echo(f"feature store: {store.safe_url}")
    for table, count in store.table_counts().items():
        click.echo(f"  {table:32} {count:>10,} rows")
    st = store.status(fv)
    if not st.exists:
        click.echo(f"view {fv.name}: no tables yet (run `ctloop init-db`)")
        return
    click.echo(
        f"view {fv.name}: {len(st.days)} days, {st.feature_rows:,} feature rows, "
        f"{st.label_rows:,} labels"
    )
    shown = st.days[-last_days:] if last_days > 0 else st.days
    if len(shown) < len(st.days):
        click.echo(f"  ({len(st.days) - len(shown)} older days not shown)")
    click.echo(f"  {'event date':12} {'features':>10} {'labels':>10} {'coverage':>9}")
    for d in shown:
        click.echo(
            f"  {d.event_date!s:12} {d.features:>10,} {d.labels:>10,} {d.label_coverage:>8.0%}"
        )
    _echo_ingest_runs(store, fv.name)


def _echo_ingest_runs(store: FeatureStore, view: str, limit: int = 10) -> None:
    """The newest ingest runs per source: what landed, what was refused, and when."""
    from ctloop.ingest.ledger import last_runs  # (b) light CLI start

    runs = last_runs(store, view, limit)
    if not runs:
        click.echo(f"ingest runs of {view}: none yet")
        return
    click.echo(f"last {len(runs)} ingest runs of {view} (newest first):")
    click.echo(f"  {'finished (UTC)':19} {'source':14} {'interval start':19} {'batches':>7} "
               f"{'taken':>9} {'rejected':>8} {'dupl.':>7} {'late lab.':>9}")  # fmt: skip
    for r in runs:
        start = f"{r['interval_start']:%Y-%m-%d %H:%M}" if r["interval_start"] else "-"
        click.echo(f"  {r['finished_at']:%Y-%m-%d %H:%M:%S} {r['source']:14} {start:19} "
                   f"{r['batches']:>7} {r['taken']:>9,} {r['rejected']:>8,} "
                   f"{r['duplicates']:>7,} {r['late_labels']:>9,}")  # fmt: skip


@cli.command()
@view_argument
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with entity, event date, label and optional arrived_at.")  # fmt: skip
@click.option(
    "--start", callback=parse_date, help="Synthetic stream: first day to land labels for."
)
@click.option("--days", type=click.IntRange(min=1), help="Synthetic stream: number of days.")
@click.option("--rows-per-day", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Synthetic stream: rows per day, as given to `generate`.")  # fmt: skip
@click.option("--seed", type=int, default=7, show_default=True,
              help="Synthetic stream: the seed given to `generate`.")  # fmt: skip
@click.option("--scenario", type=click.Choice(["none", "covariate_shift", "concept_drift"]),
              default="none", show_default=True,
              help="Synthetic stream: the drift scenario given to `generate`.")  # fmt: skip
@click.option("--drift-start", callback=parse_date,
              help="Synthetic stream: the scenario's first day (YYYY-MM-DD).")  # fmt: skip
@click.option("--label-delay-days", type=click.IntRange(min=0), default=None,
              help="Synthetic stream: days until labels land. Default: the view's.")  # fmt: skip
@click.option("--until", callback=parse_datetime, metavar=ISO_TIME,
              help="Land labels that arrived before this time (ISO 8601, UTC unless it has "
              "an offset). Default: now.")  # fmt: skip
def labels(
    view: str | None,
    file: Path | None,
    start: dt.date | None,
    days: int | None,
    rows_per_day: int,
    seed: int,
    scenario: str,
    drift_start: dt.date | None,
    label_delay_days: int | None,
    until: dt.datetime | None,
) -> None:
    """Land ground-truth labels for earlier days, so live accuracy can be measured.

    From a CSV (--file), or from the synthetic stream (--start/--days with the same seed and
    scenario as `generate`): the labels of those days that arrived before --until.
    """
    fv = view_named(view)
    store = settings_store()
    store.require_tables(fv)
    if file is not None:
        from ctloop.ingest.files import import_labels_csv  # (b) light CLI start

        result = import_labels_csv(store, fv, file)
        _echo_columns(result.renamed, result.ignored)
        click.echo(f"{file}: {result.labels_written} labels written")
        return
    if start is None or days is None:
        raise click.UsageError("give --file, or --start and --days for the synthetic stream")
    from ctloop.ingest.synth import Scenario, StreamConfig, stream  # (b) light CLI start

    config = StreamConfig(
        seed=seed, rows_per_day=rows_per_day, scenario=Scenario(scenario), drift_start=drift_start,
        label_delay_days=(
            fv.training.label_delay_days if label_delay_days is None else label_delay_days
        ),
    )  # fmt: skip
    until = until or utc_now()
    total = 0
    for day, _, day_labels in stream(fv, start, days, config):
        arrived = day_labels[day_labels["arrived_at"] < until]
        total += store.upsert_labels(fv, arrived) if not arrived.empty else 0
        click.echo(f"{day}: {len(arrived)} labels landed", err=True)
    click.echo(f"{total} labels landed for {fv.name}")


@cli.command("sample-data")
@click.argument("name", type=click.Choice(["breast_cancer", "wine", "diabetes"]))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write.")  # fmt: skip
@click.option("--start", callback=parse_date, default="2026-01-01", show_default=True,
              help="First event date.")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Event dates the rows are spread over.")  # fmt: skip
@click.option("--label-delay-days", type=click.IntRange(min=0), default=2, show_default=True,
              help="Days after its event date each label arrives (arrived_at).")  # fmt: skip
def sample_data(name: str, out: Path, start: dt.date, days: int, label_delay_days: int) -> None:
    """Write a real data set bundled with scikit-learn (breast_cancer: binary, wine:
    multiclass, diabetes: regression) as a CSV with its own column names, for the views in
    examples/views/ and the README's "Bring your own data" walkthrough."""
    from ctloop.ingest.sample import write_sample  # (b) light CLI start

    path = write_sample(name, out, start=start, days=days, label_delay_days=label_delay_days)
    click.echo(f"wrote {path} ({name}, {days} days from {start}, "
               f"labels {label_delay_days} days late)")  # fmt: skip


@cli.command("prune-log")
@click.argument("views", nargs=-1, metavar="[VIEW]...")
@click.option("--keep-days", type=click.IntRange(min=1), default=None,
              help="Whole days of log to keep. Default: CTLOOP_LOG_RETENTION_DAYS.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Count the rows that would go; delete nothing.")
def prune_log(views: tuple[str, ...], keep_days: int | None, dry_run: bool) -> None:
    """Delete prediction-log rows older than the retention, whole UTC days, every view
    when none is named. Refused when shorter than what a view's monitor reads."""
    from ctloop.monitoring.reports import DriftReports  # (b) light CLI start
    from ctloop.predlog import retention  # (b) light CLI start
    from ctloop.predlog.store import PredictionLog  # (b) light CLI start

    keep = keep_days if keep_days is not None else get_settings().log_retention_days
    if keep is None:
        raise click.UsageError("no retention: pass --keep-days or set CTLOOP_LOG_RETENTION_DAYS")
    loaded = [view_named(n) for n in (list(views) or list_views())]
    for fv in loaded:  # every view's floor first: refuse before deleting anything
        retention.check_keep(fv, keep)
    store = settings_store()
    log, reports = PredictionLog(store), DriftReports(store)
    now = utc_now()
    for fv in loaded:
        started = time.monotonic()

        def progress(done: int, name: str = fv.name, t0: float = started) -> None:
            click.echo(f"{name}: {done:,} rows deleted ({time.monotonic() - t0:.0f} s)")

        done = retention.prune(log, fv, keep, now, dry_run=dry_run, progress=progress,
                               keep_from=reports.last_window_end(fv.name))  # fmt: skip
        verb = "would delete" if dry_run else "deleted"
        dropped = f", {done.days_text}" if done.days_text else ""
        click.echo(f"{fv.name}: {verb} {done.deleted:,} rows logged before "
                   f"{done.before:%Y-%m-%d} (keeping {keep} days{dropped})")  # fmt: skip
