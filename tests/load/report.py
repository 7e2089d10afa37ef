"""After a load test: did every answered record reach `prediction_log`, exactly once?

    uv run --frozen python -m tests.load.report data/load/<run>/answers.json \\
        --stats data/load/<run>/locust_stats.csv

The answered side comes from the load generator itself (`tests/load/locustfile.py` writes
the records it got answers for, with their request ids, at test stop), not from the
service's own counters, which are what is being checked. The logged side is the rows of
`prediction_log` whose `created_at` falls in the run's window, read from the feature store
the service writes to (`FEATURE_STORE_URL` / `.env`, or `--store-url`). The prediction log
is written off the request path, so the count is taken once it has stopped changing for
longer than the writer's flush interval (`CTLOOP_SERVING_LOG_FLUSH_SECONDS`).

Prints both numbers, the request ids answered but not logged and logged but not answered,
how the invalid requests were treated, and whether locust's own final counts agree with the
tally (its stats CSV is shown too, but locust rewrites that file once a second and not at
exit, so it can miss the last second of a run); exits 1 when anything differs. The window
holds every row of the served view, so run it against a service no one else is sending
traffic to.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctloop.predlog.store import PredictionLog
from ctloop.store.features import FeatureStore

VALID_NAMES = ("predict", "predict_batch")


@dataclass
class Comparison:
    """Answered (by the load generator's count) against logged (in prediction_log)."""

    window: tuple[str, str]
    view: str | None
    answered: int
    logged: int
    not_logged: list[str] = field(default_factory=list)
    not_answered: list[str] = field(default_factory=list)
    duplicate_answers: int = 0
    in_flight_at_stop: int = 0
    invalid: dict[str, dict[str, int]] = field(default_factory=dict)
    stats_mismatches: list[str] = field(default_factory=list)
    csv_successes: dict[str, int] = field(default_factory=dict)
    waited_seconds: float = 0.0

    @property
    def invalid_sent(self) -> int:
        return sum(sum(outcomes.values()) for outcomes in self.invalid.values())

    @property
    def invalid_refused(self) -> int:
        return sum(outcomes.get("refused", 0) for outcomes in self.invalid.values())

    @property
    def ok(self) -> bool:
        return (
            self.answered == self.logged
            and not self.not_logged
            and not self.not_answered
            and not self.duplicate_answers
            and not self.stats_mismatches
        )


def naive_utc(text: str) -> dt.datetime:
    """An ISO time as the naive UTC `created_at` of prediction_log holds it."""
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def logged_ids(
    store: FeatureStore, view: str | None, start: dt.datetime, end: dt.datetime
) -> list[str]:
    """Request ids of the prediction log's rows with start <= created_at <= end (the
    view's typed table and the shared one)."""
    return PredictionLog(store).request_ids(view, since=start, through=end)


def settled_ids(
    store: FeatureStore,
    view: str | None,
    window: tuple[dt.datetime, dt.datetime],
    expected: int,
    quiet: float,
    timeout: float,
) -> tuple[list[str], float]:
    """The window's request ids once no row arrived for `quiet` seconds (and at least
    `expected` are there), or whatever is there after `timeout`; with the seconds waited."""
    started = time.monotonic()
    ids = logged_ids(store, view, *window)
    since = time.monotonic()
    while time.monotonic() - started < timeout:
        if len(ids) >= expected and time.monotonic() - since >= quiet:
            break
        time.sleep(0.25)
        now = logged_ids(store, view, *window)
        if len(now) != len(ids):
            ids, since = now, time.monotonic()
    return ids, time.monotonic() - started


def stats_mismatches(answers: dict[str, Any]) -> list[str]:
    """Where locust's own final counts disagree with the tally: successful valid requests
    per name, refused invalid requests per kind."""
    stats = answers.get("locust_stats", {})
    expected = {name: answers["answered_requests"].get(name, 0) for name in VALID_NAMES}
    for kind, outcomes in answers["invalid"].items():
        expected[f"invalid: {kind}"] = outcomes.get("refused", 0)
    problems = []
    for name, count in expected.items():
        entry = stats.get(name, {"requests": 0, "failures": 0})
        successes = entry["requests"] - entry["failures"]
        if successes != count:
            problems.append(f"{name}: locust counted {successes} successes, the tally {count}")
    return problems


def csv_successes(stats_csv: Path) -> dict[str, int]:
    """Successful requests per name in locust's stats CSV (a snapshot up to 1 s old)."""
    with stats_csv.open(newline="") as handle:
        return {
            row["Name"]: int(row["Request Count"]) - int(row["Failure Count"])
            for row in csv.DictReader(handle)
            if row["Name"] in VALID_NAMES
        }


def compare(
    answers: dict[str, Any],
    store: FeatureStore,
    stats_csv: Path | None = None,
    quiet: float = 3.0,
    timeout: float = 60.0,
) -> Comparison:
    """Answered vs logged for one run, waiting for the prediction log to settle."""
    start, end = naive_utc(answers["started_at"]), naive_utc(answers["stopped_at"])
    answered_ids: Sequence[str] = answers["request_ids"]
    ids, waited = settled_ids(
        store, answers.get("view"), (start, end), answers["answered_records"], quiet, timeout
    )
    answered, logged = set(answered_ids), set(ids)
    return Comparison(
        window=(start.isoformat(), end.isoformat()),
        view=answers.get("view"),
        answered=answers["answered_records"],
        logged=len(ids),
        not_logged=sorted(answered - logged),
        not_answered=sorted(logged - answered),
        duplicate_answers=len(answered_ids) - len(answered),
        in_flight_at_stop=answers.get("in_flight_at_stop", 0),
        invalid=answers.get("invalid", {}),
        stats_mismatches=stats_mismatches(answers),
        csv_successes=csv_successes(stats_csv) if stats_csv else {},
        waited_seconds=round(waited, 2),
    )


def render(result: Comparison, answers: dict[str, Any]) -> str:
    requests = answers["answered_requests"]
    lines = [
        f"load run {result.window[0]} .. {result.window[1]} UTC against {answers['host']}",
        f"  answered (load generator): {result.answered:>8} records "
        f"({requests.get('predict', 0)} /predict, {requests.get('predict_batch', 0)} "
        f"/predict_batch)",
        f"  logged (prediction_log):   {result.logged:>8} rows of view {result.view} in the "
        f"window (settled after {result.waited_seconds:.1f} s)",
        f"  answered, not logged:      {len(result.not_logged):>8} {result.not_logged[:5]}",
        f"  logged, not answered:      {len(result.not_answered):>8} {result.not_answered[:5]}",
    ]
    if result.duplicate_answers:
        lines.append(f"  request ids answered twice: {result.duplicate_answers}")
    if result.in_flight_at_stop:
        lines.append(
            f"  requests in flight when the run stopped: {result.in_flight_at_stop} "
            "(killed clients: their rows can be logged without an answer; raise --stop-timeout)"
        )
    kinds = ", ".join(
        f"{kind} {outcomes.get('refused', 0)}/{sum(outcomes.values())}"
        for kind, outcomes in sorted(result.invalid.items())
    )
    lines.append(
        f"  invalid requests refused:  {result.invalid_refused:>8} of {result.invalid_sent}"
        + (f" ({kinds})" if kinds else "")
    )
    lines.extend(f"  locust's stats differ: {problem}" for problem in result.stats_mismatches)
    if result.csv_successes:
        batch = (answers.get("options") or {}).get("batch_size") or 0
        records = result.csv_successes.get("predict", 0)
        records += result.csv_successes.get("predict_batch", 0) * batch
        lines.append(
            "  locust_stats.csv (rewritten every second, not at exit): "
            + ", ".join(f"{name} {n} ok" for name, n in result.csv_successes.items())
            + f", ~{records} records"
        )
    lines.append(
        "OK: every answered record is in prediction_log exactly once"
        if result.ok
        else "MISMATCH: answered records and prediction_log rows differ"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.load.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("answers", type=Path, help="the locustfile's --answers-file")
    parser.add_argument("--stats", type=Path, help="locust's <prefix>_stats.csv, shown")
    parser.add_argument("--store-url", help="feature store URL (default: FEATURE_STORE_URL)")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=None,
        help="rows must stop arriving this long (default: the writer's flush interval + 2 s)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="longest wait (60 s)")
    parser.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)

    if not args.answers.is_file():
        print(f"error: {args.answers} does not exist: the load test did not get to its end")
        return 2
    answers = json.loads(args.answers.read_text())
    quiet = args.quiet_seconds
    if quiet is None:
        from serving.config import ServingConfig  # the same variable the service reads

        quiet = ServingConfig().log_flush_seconds + 2.0
    store = FeatureStore(args.store_url) if args.store_url else FeatureStore.from_settings()
    try:
        result = compare(answers, store, args.stats, quiet=quiet, timeout=args.timeout)
    finally:
        store.dispose()
    print(render(result, answers))
    if args.json:
        args.json.write_text(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
