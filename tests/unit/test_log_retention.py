"""Prediction-log retention (`ctloop.predlog.retention`): whole old days of one view go, in
chunks; what the monitor still reads is refused as a retention; `ctloop prune-log` says
what it did. On SQLite here; `integration/test_log_retention_mariadb.py` runs the same
tests on MariaDB (its `DELETE ... LIMIT` path)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from ctloop.features.view import FeatureView
from ctloop.predlog import retention
from ctloop.predlog.store import PredictionLog
from ctloop.store.features import FeatureStore
from tests.support.paths import FEATURES_DIR

NOW = dt.datetime(2026, 3, 31, 15, 30)


def row(rid: str, view: str, at: dt.datetime) -> dict:
    return {"request_id": rid, "feature_view": view, "model_version": "1", "entity_id": "e",
            "features": {"x": 1.0}, "prediction": "a", "probabilities": {"a": 1.0},
            "latency_ms": 1.0, "created_at": at}  # fmt: skip


def fill(log: PredictionLog, view: str, days: int, per_day: int) -> None:
    """`per_day` rows on each of the `days` days up to NOW's day, spread over each day from
    its first to its last second."""
    rows = []
    for back in range(days):
        day = dt.datetime.combine(NOW.date() - dt.timedelta(days=back), dt.time())
        for i in range(per_day):
            at = day + dt.timedelta(seconds=i * (86_399 // max(per_day - 1, 1)))
            rows.append(row(f"{view}-{back}-{i}", view, at))
    log.write(rows)


def test_whole_old_days_of_one_view_go_in_chunks(store: FeatureStore, view: FeatureView) -> None:
    log = PredictionLog(store)
    fill(log, view.name, days=40, per_day=25)
    fill(log, "other_view", days=40, per_day=5)
    keep = retention.min_keep_days(view)  # 15: the monitor's 14 days + today
    seen: list[int] = []
    dry = retention.prune(log, view, keep, NOW, dry_run=True)
    assert dry.deleted == (40 - keep - 1) * 25 and log.count(view.name) == 40 * 25
    done = retention.prune(log, view, keep, NOW, chunk_rows=60, progress=seen.append)
    assert done.before == dt.datetime(2026, 3, 31) - dt.timedelta(days=keep)
    assert done.deleted == dry.deleted == (40 - keep - 1) * 25
    assert seen == [*range(60, done.deleted, 60), done.deleted]  # chunk by chunk
    left = log.read(view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1),
                    expand_features=False)  # fmt: skip
    # every kept day whole, from the cutoff's first second; nothing older
    assert left["created_at"].min() == done.before
    assert len(left) == (keep + 1) * 25
    assert log.count("other_view") == 40 * 5  # another view's log is its own
    again = retention.prune(log, view, keep, NOW)
    assert again.deleted == 0


def test_a_retention_shorter_than_the_monitor_reads_is_refused(
    store: FeatureStore, view: FeatureView
) -> None:
    log = PredictionLog(store)
    fill(log, view.name, days=20, per_day=2)
    floor = retention.min_keep_days(view)
    with pytest.raises(retention.RetentionError, match=r"accuracy_window_days.*at least 15"):
        retention.prune(log, view, floor - 1, NOW)
    longer = view.model_copy(update={"rollout": view.rollout.model_copy(
        update={"max_trial_days": 30.5})})  # fmt: skip
    assert retention.min_keep_days(longer) == 32
    with pytest.raises(retention.RetentionError, match="max_trial_days"):
        retention.prune(log, longer, 20, NOW)
    assert log.count(view.name) == 40  # nothing was deleted


def test_prune_log_command(store: FeatureStore, view: FeatureView, store_url: str) -> None:
    log = PredictionLog(store)
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    log.write([row("old", view.name, today - dt.timedelta(days=60)),
               row("new", view.name, today)])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTLOOP_")}
    env.update(FEATURE_STORE_URL=store_url, CTLOOP_FEATURES_DIR=str(FEATURES_DIR))

    def ctloop(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctloop.cli", "prune-log", *args],
                              env={**env, **extra}, capture_output=True, text=True,
                              check=False, timeout=120)  # fmt: skip

    no_keep = ctloop(view.name)
    assert no_keep.returncode == 2 and "CTLOOP_LOG_RETENTION_DAYS" in no_keep.stderr
    short = ctloop(view.name, "--keep-days", "3")
    assert short.returncode == 2 and "keep at least 15 days" in short.stderr, short.stderr
    dry = ctloop(view.name, "--keep-days", "30", "--dry-run")
    assert dry.returncode == 0 and "would delete 1 rows" in dry.stdout, dry.stderr
    assert log.count(view.name) == 2
    done = ctloop(view.name, CTLOOP_LOG_RETENTION_DAYS="30")
    assert done.returncode == 0 and "deleted 1 rows" in done.stdout, done.stderr
    assert log.count(view.name) == 1
