"""`ctloop`: every pipeline step by hand, calling the same library functions as the DAGs.

User errors (`CtloopError`) print one clear message and exit with status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path

import click

from ctloop.clirunner import run_command
from ctloop.features.view import FeatureView, list_views, load_view

log = logging.getLogger("ctloop")


def _view(name: str | None) -> FeatureView:
    """The named view, or the settings' default view (CTLOOP_DEFAULT_VIEW)."""
    if name is None:
        from ctloop.settings import get_settings

        name = get_settings().default_view
    return load_view(name)


def _store():
    from ctloop.store.features import FeatureStore

    return FeatureStore.from_settings()


def _date(_ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param=param) from exc


def _datetime(_ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"'{value}' is not a date or time (ISO 8601)", param=param
        ) from exc


view_argument = click.argument("view", required=False, metavar="[VIEW]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="ctloop")
def cli(verbose: bool) -> None:
    """ctloop: continuous training of CatBoost models over a feature store.

    VIEW is a feature view name from the features folder (default: $CTLOOP_DEFAULT_VIEW,
    credit_score).
    Configuration comes from the environment and .env (see .env.example).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@cli.command("init-db")
@click.argument("views", nargs=-1, metavar="[VIEW]...")
def init_db(views: tuple[str, ...]) -> None:
    """Create the feature store tables (all views when none is named); safe to repeat."""
    names = list(views) or list_views()
    loaded = [_view(n) for n in names]
    store = _store()
    store.init(loaded)
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
def show_view(view: str | None) -> None:
    """Validate a feature view file and print its contract."""
    fv = _view(view)
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
@click.option("--days", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--rows-per-day", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--start", callback=_date, help="First day (YYYY-MM-DD). Default: --days before today."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--scenario",
    type=click.Choice(["none", "covariate_shift", "concept_drift"]),
    default="none",
    show_default=True,
    help="Drift scenario that starts on --drift-start.",
)
@click.option("--drift-start", callback=_date, help="Day the scenario starts (YYYY-MM-DD).")
@click.option(
    "--label-delay-days",
    type=click.IntRange(min=0),
    default=None,
    help="Days until labels land. Default: the view's training.label_delay_days.",
)
@click.option(
    "--labels-until",
    callback=_datetime,
    help="Write only labels that arrived before this time. Default: now.",
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
    from ctloop.ingest.synth import Scenario, StreamConfig, stream

    fv = _view(view)
    if scenario != "none" and drift_start is None:
        raise click.BadParameter("a drift scenario needs --drift-start", param_hint="--scenario")
    start = start or (dt.date.today() - dt.timedelta(days=days))
    until = labels_until or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    config = StreamConfig(
        seed=seed,
        rows_per_day=rows_per_day,
        scenario=Scenario(scenario),
        drift_start=drift_start,
        label_delay_days=(
            fv.training.label_delay_days if label_delay_days is None else label_delay_days
        ),
    )
    store = _store()
    store.require_tables(fv)
    began = time.perf_counter()
    total_f = total_l = 0
    for i, (day, features, labels) in enumerate(stream(fv, start, days, config), 1):
        arrived = labels[labels["arrived_at"] < until]
        n_f, n_l = store.ingest(fv, features, None if no_labels else arrived)
        total_f += n_f
        total_l += n_l
        click.echo(f"[{i}/{days}] {day}: {n_f} feature rows, {n_l} labels", err=True)
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
    from ctloop.ingest.files import import_csv

    fv = _view(view)
    result = import_csv(_store(), fv, file, skip_bad_rows=skip_bad_rows)
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
    fv = _view(view)
    store = _store()
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


def _echo_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, indent=2, default=str))


@cli.command()
@view_argument
@click.option("--as-of", callback=_date, help="Train as of this date (YYYY-MM-DD). Default: today.")
@click.option(
    "--trigger",
    type=click.Choice(["manual", "schedule", "new-data", "drift"]),
    default="manual",
    show_default=True,
)
@click.option("--reason", default="", help="Why this run happened (tagged on the version).")
@click.option("--force-promote", is_flag=True, help="Promote even if the model gate refuses.")
def train(
    view: str | None, as_of: dt.date | None, trigger: str, reason: str, force_promote: bool
) -> None:
    """Run the whole CT pipeline by hand: extract, data gate, train, model gate, infra, promote.

    Exits 2 with a report when the data gate refuses the data or the model cannot be loaded.
    A candidate the model gate refuses stays registered (tagged gate.model=failed) but is
    not promoted; that is a normal outcome, exit status 0.
    """
    from ctloop.training.pipeline import Run, run_all

    run = Run.make(_view(view).name, as_of, trigger, reason)
    result = run_all(run, force_promote=force_promote)
    _echo_json(result)
    verdict = "promoted" if result["promoted"] else "not promoted (model gate refused)"
    click.echo(f"{run.view.name} version {result['train']['version']}: {verdict}", err=True)


@cli.command()
@click.argument("view")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if a gate did not pass (needs --reason).")
@click.option("--reason", default="", help="Why: recorded on the version (forced_reason).")
def promote(view: str, version: str, force: bool, reason: str) -> None:
    """Point alias `champion` at VERSION (the old champion becomes `previous`).

    A version that did not pass its gates serves only when promoted here with --force and
    a --reason; who and why are written on the version, and serving refuses a champion
    moved any other way (the MLflow UI's alias pencil, a script)."""
    from ctloop.training.pipeline import Run
    from ctloop.training.pipeline import promote as promote_step

    if force and not reason.strip():
        raise click.UsageError("--force needs --reason: say why this version should serve")
    _echo_json(promote_step(Run.make(view, reason=reason), version, force=force))


@cli.command()
@click.argument("view")
def rollback(view: str) -> None:
    """Swap `champion` and `previous`: one command back to the last champion."""
    from ctloop.training.pipeline import Run, notify_serving

    run = Run.make(view)
    new, old = run.registry().rollback(run.view.name)
    serving = notify_serving(run.cfg, run.view.name, new.version)
    click.echo(f"{view}: champion is version {new.version} again (was {old.version}); {serving}")


@cli.command()
@view_argument
def models(view: str | None) -> None:
    """Registered versions of VIEW's model with their aliases and gate results."""
    from ctloop.registry import Registry

    fv = _view(view)
    metric = fv.primary_metric  # the view's own gate metric, by its label kind
    registry = Registry.from_settings()
    champion, previous = registry.champion(fv.name), registry.previous(fv.name)
    for v in registry.versions(fv.name):
        alias = (
            "champion" if champion and v.version == champion.version
            else "previous" if previous and v.version == previous.version else ""
        )  # fmt: skip
        gates = " ".join(f"{g}={v.tags.get(f'gate.{g}', '-')}" for g in ("data", "model", "infra"))
        click.echo(
            f"v{v.version:<4} {alias:9} as_of={v.tags.get('as_of', '-')} "
            f"trigger={v.tags.get('trigger', '-'):9} {gates} "
            f"{metric}={v.tags.get(f'metric.{metric}', '-')}"
        )


@cli.command()
@view_argument
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV with entity, event date, label and optional arrived_at.")  # fmt: skip
@click.option("--start", callback=_date, help="Synthetic stream: first day to land labels for.")
@click.option("--days", type=click.IntRange(min=1), help="Synthetic stream: number of days.")
@click.option("--rows-per-day", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--scenario", type=click.Choice(["none", "covariate_shift", "concept_drift"]),
              default="none", show_default=True)  # fmt: skip
@click.option("--drift-start", callback=_date)
@click.option("--label-delay-days", type=click.IntRange(min=0), default=None)
@click.option("--until", callback=_datetime, help="Land labels that arrived before this time.")
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
    fv = _view(view)
    store = _store()
    store.require_tables(fv)
    if file is not None:
        from ctloop.ingest.files import import_labels_csv

        result = import_labels_csv(store, fv, file)
        _echo_columns(result.renamed, result.ignored)
        click.echo(f"{file}: {result.labels_written} labels written")
        return
    if start is None or days is None:
        raise click.UsageError("give --file, or --start and --days for the synthetic stream")
    from ctloop.ingest.synth import Scenario, StreamConfig, stream

    config = StreamConfig(
        seed=seed, rows_per_day=rows_per_day, scenario=Scenario(scenario), drift_start=drift_start,
        label_delay_days=(
            fv.training.label_delay_days if label_delay_days is None else label_delay_days
        ),
    )  # fmt: skip
    until = until or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    total = 0
    for day, _, day_labels in stream(fv, start, days, config):
        arrived = day_labels[day_labels["arrived_at"] < until]
        total += store.upsert_labels(fv, arrived) if not arrived.empty else 0
        click.echo(f"{day}: {len(arrived)} labels landed", err=True)
    click.echo(f"{total} labels landed for {fv.name}")


@cli.command()
@view_argument
@click.option("--since", callback=_datetime, help="Window start. Default: end of the last check.")
@click.option("--until", callback=_datetime, help="Window end. Default: now.")
@click.option("--retrain", is_flag=True, help="On drift or decay, run the CT pipeline here.")
def monitor(
    view: str | None, since: dt.datetime | None, until: dt.datetime | None, retrain: bool
) -> None:
    """Check the champion's logged predictions for drift and accuracy decay.

    Writes the findings to the drift_report table and prints one line. With --retrain, a
    drift or decay outside the cooldown runs `ctloop train --trigger drift` in-process
    (inside Airflow the monitor DAG triggers the CT DAG instead).
    """
    from ctloop.monitoring.check import monitor_step
    from ctloop.registry import Registry

    fv = _view(view)
    decision = monitor_step(fv, _store(), Registry.from_settings(), since, until)
    click.echo(decision["summary"])
    if retrain and decision["trigger"]:
        from ctloop.training.pipeline import Run, run_all

        drifted = decision["conf"]["findings"].get("drifted_features", [])
        run = Run.make(fv.name, None, "drift", decision["conf"]["reason"], "", drifted)
        result = run_all(run)
        verdict = "promoted" if result["promoted"] else "not promoted"
        click.echo(f"drift retrain: version {result['train']['version']} {verdict}")


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Demo folder (wiped first). Default: <data dir>/demo.",
)
@click.option(
    "--days",
    type=click.IntRange(4, 60),
    default=12,
    show_default=True,
    help="Simulated days of traffic.",
)
@click.option(
    "--drift-day",
    type=click.IntRange(1, 57),
    default=3,
    show_default=True,
    help="Day (0-based) on which the concept drift starts.",
)
@click.option(
    "--rows-per-day",
    type=click.IntRange(500, 20000),
    default=800,
    show_default=True,
    help="Customers (requests) per simulated day.",
)
@click.option("--seed", type=int, default=2026, show_default=True)
def demo(out: Path | None, days: int, drift_day: int, rows_per_day: int, seed: int) -> None:
    """Run the whole loop on the embedded default and check that it closes.

    Real DAGs in Airflow (dag.test), a real `bentoml serve`, HTTP traffic with a concept
    drift part-way, the monitor, drift-triggered and daily scheduled retraining, hot
    swaps, and an oracle (retrained daily on every label since the change) to measure
    the served model against. Prints a
    day-by-day timeline, writes demo_accuracy.png and demo_summary.json to the demo folder,
    and exits 1 if the loop did not close.
    """
    from ctloop.dev.demo import DemoConfig, run_demo, timeline_table
    from ctloop.settings import get_settings

    folder = out or get_settings().data_dir / "demo"
    config = DemoConfig(out=folder, days=days, drift_day=drift_day,
                        rows_per_day=rows_per_day, seed=seed)  # fmt: skip
    summary = run_demo(config, lambda line: click.echo(line, err=True))
    click.echo(timeline_table(summary))
    click.echo("")
    for name, ok in summary["checks"].items():
        click.echo(f"  [{'ok' if ok else 'FAILED'}] {name}")
    served, static = summary["served_accuracy_last_days"], summary["static_accuracy_last_days"]
    oracle = summary.get("oracle_accuracy_last_days")
    if served is not None and static is not None:
        against = f" vs oracle {oracle:.3f}" if oracle is not None else ""
        click.echo(f"live accuracy, last 3 days: served {served:.3f} vs never retrained "
                   f"{static:.3f}{against}")  # fmt: skip
    click.echo(f"answered {summary['answered']}, logged {summary['logged']}; "
               f"{summary['elapsed_s']:.0f}s; plot: {summary['plot']}")  # fmt: skip
    if not summary["closed"]:
        click.echo("the loop did NOT close (see the FAILED checks above)", err=True)
        sys.exit(1)
    click.echo("the loop closed.")


@cli.command("sample-data")
@click.argument("name", type=click.Choice(["breast_cancer", "wine", "diabetes"]))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write.")  # fmt: skip
@click.option("--start", callback=_date, default="2026-01-01", show_default=True,
              help="First event date.")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Event dates the rows are spread over.")  # fmt: skip
@click.option("--label-delay-days", type=click.IntRange(min=0), default=2, show_default=True,
              help="Days after its event date each label arrives (arrived_at).")  # fmt: skip
def sample_data(name: str, out: Path, start: dt.date, days: int, label_delay_days: int) -> None:
    """Write a real data set bundled with scikit-learn (breast_cancer: binary, wine:
    multiclass, diabetes: regression) as a CSV with its own column names, for the views in
    examples/views/ and the README's "Bring your own data" walkthrough."""
    from ctloop.ingest.sample import write_sample

    path = write_sample(name, out, start=start, days=days, label_delay_days=label_delay_days)
    click.echo(f"wrote {path} ({name}, {days} days from {start}, "
               f"labels {label_delay_days} days late)")  # fmt: skip


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    run_command(cli)


if __name__ == "__main__":
    main()
