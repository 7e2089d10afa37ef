"""Commands that run the loop by hand: train, promote, roll back, list models, monitor,
and the whole demo — the same library calls the DAGs make."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from ctloop.cli.app import (
    ISO_TIME,
    cli,
    echo_json,
    parse_date,
    parse_datetime,
    settings_store,
    view_argument,
    view_named,
)
from ctloop.settings import get_settings

log = logging.getLogger(__name__)

TRAIN_STEPS = ("extract", "data_gate", "train", "model_gate", "infra_check", "promote")


def step_headline(step: str, outcome: dict[str, Any]) -> str:
    """The one fact of a finished step a person waits for: what was read, what the gates
    said, which version, where `champion` points now. The full outcome is in the JSON."""
    if step == "extract":
        return (f"{outcome['rows']} rows ({outcome['window_start']}..{outcome['window_end']}), "
                f"fingerprint {outcome['fingerprint']}")  # fmt: skip
    if step == "train":
        reused = " (reused: same data, same version)" if outcome.get("reused") else ""
        return f"version {outcome['version']}{reused}"
    if step == "model_gate":
        verdict = "blessed" if outcome["blessed"] else "refused"
        champion = outcome.get("champion_metric")
        against = f" vs champion {champion:.4f}" if champion is not None else " (no champion)"
        return f"{verdict}: {outcome['metric']} {outcome['candidate_metric']:.4f}{against}"
    if step == "infra_check":
        return f"loads and predicts {outcome['rows']} rows in {outcome['predict_ms']} ms"
    if step == "promote":
        forced = " (forced)" if outcome.get("forced") else ""
        return f"champion is version {outcome['champion']}{forced}; {outcome['serving']}"
    checks = outcome.get("checks", [])
    return f"{'passed' if outcome.get('passed') else 'refused'} ({len(checks)} checks)"


class StepLog:
    """`run_all`'s progress as log lines on stderr, one as each step starts and one as it
    ends, so a run of minutes is not silent until its JSON lands on stdout."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def __call__(self, step: str, outcome: dict[str, Any] | None) -> None:
        """Log the start of `step` (no outcome yet) or its end with time and headline."""
        label = f"[{TRAIN_STEPS.index(step) + 1}/{len(TRAIN_STEPS)}] {step}"
        now = time.perf_counter()
        if outcome is None:
            self._started[step] = now
            log.info("%s: started", label)
            return
        took = now - self._started.pop(step, now)
        log.info("%s: done in %.1fs: %s", label, took, step_headline(step, outcome))


@cli.command()
@view_argument
@click.option(
    "--as-of", callback=parse_date, help="Train as of this date (YYYY-MM-DD). Default: today."
)
@click.option(
    "--trigger",
    type=click.Choice(["manual", "schedule", "new-data", "drift"]),
    default="manual",
    show_default=True,
    help="Why the run happens, as the DAG would record it (tagged on the version).",
)
@click.option("--reason", default="", help="Why this run happened (tagged on the version).")
@click.option("--force-promote", is_flag=True, help="Promote even if the model gate refuses.")
def train(
    view: str | None, as_of: dt.date | None, trigger: str, reason: str, force_promote: bool
) -> None:
    """Run the whole CT pipeline by hand: extract, data gate, train, model gate, infra, promote.

    Each step logs a line to stderr as it starts and ends (rows and fingerprint, gate
    verdicts, version, promotion); the full outcome is printed as JSON on stdout at the end.
    Exits 2 with a report when the data gate refuses the data or the model cannot be loaded.
    A candidate the model gate refuses stays registered (tagged gate.model=failed) but is
    not promoted; that is a normal outcome, exit status 0.
    """
    from ctloop.training.pipeline import Run, run_all  # (b) light CLI start

    run = Run.make(view_named(view).name, as_of, trigger, reason)
    result = run_all(run, force_promote=force_promote, progress=StepLog())
    echo_json(result)
    if result["promoted"]:
        verdict = "promoted"
    elif "challenger" in result.get("promote", {}):
        mode = result["promote"]["rollout"]
        verdict = f"on a {mode} trial (alias challenger): the live gate decides"
    else:
        verdict = "not promoted (model gate refused)"
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
    from ctloop.store.ctlock import CtLock, cli_holder  # (b) light CLI start
    from ctloop.training.pipeline import Run  # (b) light CLI start
    from ctloop.training.pipeline import promote as promote_step  # (b) light CLI start

    if force and not reason.strip():
        raise click.UsageError("--force needs --reason: say why this version should serve")
    run = Run.make(view, reason=reason)
    store = run.store()
    try:  # never while a CT run of the view is between its model gate and its promotion
        with CtLock(store).held(run.view.name, cli_holder()):
            echo_json(promote_step(run, version, force=force))
    finally:
        store.dispose()


@cli.command()
@click.argument("view")
def rollback(view: str) -> None:
    """Swap `champion` and `previous`: one command back to the last champion."""
    from ctloop.training.pipeline import Run, notify_serving  # (b) light CLI start

    run = Run.make(view)
    new, old = run.registry().rollback(run.view.name)
    serving = notify_serving(run.cfg, run.view.name, new.version)
    click.echo(f"{view}: champion is version {new.version} again (was {old.version}); {serving}")


@cli.command()
@view_argument
def models(view: str | None) -> None:
    """Registered versions of VIEW's model with their aliases and gate results."""
    from ctloop.registry import Registry  # (b) light CLI start

    fv = view_named(view)
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
            f"{metric}={v.metrics[metric]:.4f}"
            if metric in v.metrics
            else f"{metric}=-"
        )


@cli.command()
@view_argument
@click.option(
    "--since",
    callback=parse_datetime,
    metavar=ISO_TIME,
    help="Window start, ISO 8601 (2026-02-10 or 2026-02-10T06:00), UTC unless it has an "
    "offset. Default: end of the last check.",
)
@click.option(
    "--until",
    callback=parse_datetime,
    metavar=ISO_TIME,
    help="Window end, ISO 8601, UTC unless it has an offset. Default: now.",
)
@click.option("--retrain", is_flag=True, help="On drift or decay, run the CT pipeline here.")
def monitor(
    view: str | None, since: dt.datetime | None, until: dt.datetime | None, retrain: bool
) -> None:
    """Check the champion's logged predictions for drift and accuracy decay.

    Writes the findings to the drift_report table and prints one line. With --retrain, a
    drift or decay outside the cooldown runs `ctloop train --trigger drift` in-process
    (inside Airflow the monitor DAG triggers the CT DAG instead). With
    CTLOOP_LOG_RETENTION_DAYS set, log days older than that are deleted after the check.
    """
    from ctloop.monitoring.check import monitor_step  # (b) light CLI start
    from ctloop.registry import Registry  # (b) light CLI start
    from ctloop.training.promotion import notify_serving  # (b) light CLI start

    fv = view_named(view)

    def promoted(version: str) -> None:  # the live gate promoted a challenger
        click.echo(notify_serving(get_settings(), fv.name, version))

    decision = monitor_step(fv, settings_store(), Registry.from_settings(), since, until,
                            on_promoted=promoted,
                            keep_days=get_settings().log_retention_days)  # fmt: skip
    click.echo(decision["summary"])
    if retrain and decision["trigger"]:
        from ctloop.training.pipeline import Run, run_all  # (b) light CLI start

        drifted = decision["conf"]["findings"].get("drifted_features", [])
        run = Run.make(fv.name, None, "drift", decision["conf"]["reason"], "", drifted)
        result = run_all(run, progress=StepLog())
        verdict = "promoted" if result["promoted"] else "not promoted"
        click.echo(f"drift retrain: version {result['train']['version']} {verdict}")


def bounded_int(name: str, low: int, high: int, default: int, text: str) -> Any:
    """A whole-number option within [low, high], shown with its default."""
    return click.option(
        name, type=click.IntRange(low, high), default=default, show_default=True, help=text
    )


@cli.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Demo folder (wiped first). Default: <data dir>/demo.",
)
@bounded_int("--days", 4, 60, 12, "Simulated days of traffic.")
@bounded_int("--drift-day", 1, 57, 3, "Day (0-based) on which the concept drift starts.")
@bounded_int("--rows-per-day", 500, 20000, 800, "Customers (requests) per simulated day.")
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed of every draw.")
@click.option(
    "--rollout",
    type=click.Choice(["direct", "shadow"]),
    default="direct",
    show_default=True,
    help="shadow: the drift retrain goes on a shadow trial and the live gate decides.",
)
def demo(
    out: Path | None, days: int, drift_day: int, rows_per_day: int, seed: int, rollout: str
) -> None:
    """Run the whole loop on the embedded default and check that it closes.

    Real DAGs in Airflow (dag.test), a real `bentoml serve`, HTTP traffic with a concept
    drift part-way, the monitor, drift-triggered and daily scheduled retraining, hot
    swaps, and an oracle (retrained daily on every label since the change) to measure
    the served model against. Prints a
    day-by-day timeline, writes demo_accuracy.png and demo_summary.json to the demo folder,
    and exits 1 if the loop did not close.
    """
    from ctloop.dev.demo import DemoConfig, run_demo, timeline_table  # (b) light CLI start

    folder = out or get_settings().data_dir / "demo"
    config = DemoConfig(out=folder, days=days, drift_day=drift_day,
                        rows_per_day=rows_per_day, seed=seed, rollout=rollout)  # fmt: skip
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
