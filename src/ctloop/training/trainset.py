"""The point-in-time training set of a run: which days it reads, the read, its fingerprint.

Steps of one run must see the same rows. In one process (the CLI, `dag.test()`, the demo)
the set extract read is kept by its fingerprint and handed to the later steps without a
second read; a step in another process (an Airflow worker) reads it again and checks the
fingerprint, so a set that changed mid-run stops the run instead of mixing two data sets.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ctloop.store.features import FeatureStore
from ctloop.training.datagate import split_days, validation_start
from ctloop.training.run import DataChangedError, Run, fingerprint

log = logging.getLogger(__name__)

_KEEP = 2  # sets kept per process: the run in progress and one before it
_recent: collections.OrderedDict[tuple[str, str, str, int, str], TrainingSet] = (
    collections.OrderedDict()
)


@dataclass(frozen=True)
class TrainingSet:
    """A read training set and what the steps and tags say about it."""

    frame: pd.DataFrame
    summary: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        """The content hash every later step checks (salted by the pre-change weighting)."""
        return str(self.summary["fingerprint"])


def training_window(run: Run, store: FeatureStore) -> tuple[int, dict[str, Any]]:
    """How many days the run reads, and what it does with rows from before a concept
    change the monitor recorded (`registry.change_onset`).

    After a change, rows from before it teach the old rule. The onset counts for a run as
    of D only if the labels that showed the change are of days before D (point in time).
    When the days since the onset hold at least `gates.data.min_rows` labelled rows, of
    which at least `gates.data.min_validation_rows` lie before the validation days, the
    window starts at the onset (older rows are dropped); with fewer, the whole window is
    read and the older rows weigh `training.pre_change_weight`, so the first runs after
    a change still have enough rows and already lean to the new concept.
    """
    days = run.window_days
    change = run.registry().change_onset(run.view.name)
    if change is None:
        return days, {}
    onset, found = dt.date.fromisoformat(change[0]), dt.date.fromisoformat(change[1])
    since = (run.as_of - onset).days
    if found >= run.as_of or since <= 0 or since >= days:
        return days, {}  # not known as of this date, or the whole window is on one side
    info = {"change_onset": change[0], "change_found": change[1]}
    per_day = store.labelled_per_day(run.view, run.as_of, since)
    cutoff = validation_start(run.view, max(per_day)) if per_day else run.as_of
    train_rows = sum(n for day, n in per_day.items() if day < cutoff)
    gate = run.view.gates.data
    if sum(per_day.values()) >= gate.min_rows and train_rows >= gate.min_validation_rows:
        return since, {**info, "pre_change": "dropped"}
    return days, {**info, "pre_change": "weighted"}


def _read(run: Run, store_url: str | None) -> TrainingSet:
    store = run.store(store_url)
    try:
        days, change = training_window(run, store)
        frame = store.training_set(run.view, run.as_of, days)
    finally:
        store.dispose()
    start, end = store.window(run.view, run.as_of, days)
    is_val = split_days(run.view, frame)
    summary = {
        "view": run.view.name,
        "as_of": run.as_of.isoformat(),
        "window_start": start.isoformat(),
        "window_end": (end - dt.timedelta(days=1)).isoformat(),
        "rows": len(frame),
        "train_rows": int((~is_val).sum()),
        "validation_rows": int(is_val.sum()),
        "fingerprint": fingerprint(frame),
        **change,
    }
    if change.get("pre_change") == "weighted":  # same rows, other weights: another model
        weight = run.view.training.pre_change_weight
        salt = f"{summary['fingerprint']}|{change['change_onset']}|{weight}".encode()
        summary["fingerprint"] = hashlib.sha256(salt).hexdigest()[:16]
    return TrainingSet(frame, summary)


def _key(run: Run, store_url: str | None, fp: str) -> tuple[str, str, str, int, str]:
    return (store_url or run.cfg.store_url, run.view.name, run.as_of.isoformat(),
            run.window_days, fp)  # fmt: skip


def load(run: Run, store_url: str | None = None, expected: str | None = None) -> TrainingSet:
    """The run's training set: the one extract read when this process holds it (by
    `expected` fingerprint), else a fresh read that must match `expected`."""
    if expected is not None:
        kept = _recent.get(_key(run, store_url, expected))
        if kept is not None:
            _recent.move_to_end(_key(run, store_url, expected))
            return kept
    found = _read(run, store_url)
    if expected and found.fingerprint != expected:
        raise DataChangedError(
            f"the training data for {run.view.name} as of {run.as_of} changed during this run "
            f"(fingerprint {expected} -> {found.fingerprint}); retry the run"
        )
    _recent[_key(run, store_url, found.fingerprint)] = found
    while len(_recent) > _KEEP:
        _recent.popitem(last=False)
    return found


def extract(run: Run, store_url: str | None = None) -> dict[str, Any]:
    """Step 1: read the point-in-time training set and describe it (rows, window, hash)."""
    found = load(run, store_url)
    log.info("extracted %s", json.dumps(found.summary))
    return found.summary
