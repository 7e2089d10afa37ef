"""The live gate: promote a challenger on live evidence, or drop it with the reason.

Offline gates judge a candidate on held-out history; the live gate judges it on the
traffic it will serve. During a shadow trial both models answered every request (the
champion to the caller, the challenger in the log as role `shadow`, request id +
`.shadow`), so once labels land the two are compared on the *same* labelled requests:
paired, which cancels the requests' own difficulty and needs far fewer labels than two
separate samples. The difference of the view's primary metric (challenger better > 0, in
the unit its tolerances use) gets a paired bootstrap confidence interval at
`rollout.confidence`:

* the whole interval above 0: **promoted** (the challenger becomes champion);
* the whole interval below 0: **dropped**, it is worse;
* otherwise the trial goes on, until `rollout.max_trial_days`, then **dropped** for want
  of evidence (a candidate that is not shown to be better does not replace a champion).

During a canary trial each entity is answered by one model only, so the two groups of
labelled requests (champion's, canary's) are compared unpaired: each resampled on its
own, the same interval rule applied.

Fewer than `rollout.min_labelled_pairs` labelled pairs (per group, canary): the trial
goes on (or ends at the deadline). The decision and its figures are returned for the
drift report and the task log; the registry records the outcome on the challenger (`live_gate`,
`live_gate.reason`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctloop.core.metrics import draw_groups, group_members, metric, score_one
from ctloop.features.view import FeatureView
from ctloop.monitoring.live import labelled_logs, logged_output
from ctloop.predlog.sample import block_of, bounded_fraction
from ctloop.predlog.store import (
    CANARY_ROLE,
    CHAMPION_ROLE,
    SHADOW_ROLE,
    SHADOW_SUFFIX,
    PredictionLog,
)
from ctloop.registry import Registry, VersionInfo
from ctloop.store.features import FeatureStore

DRAWS = 1000
PROMOTED, DROPPED, CONTINUE = "promoted", "dropped", "continue"


@dataclass
class LiveGate:
    """One look at a live trial: the outcome and what it rests on."""

    view: str
    champion: str
    challenger: str
    outcome: str
    reason: str
    pairs: int = 0
    metric: str = ""
    champion_value: float | None = None
    challenger_value: float | None = None
    low: float | None = None
    high: float | None = None


def _trial_logs(
    view: FeatureView,
    store: FeatureStore,
    champion: VersionInfo,
    trial: VersionInfo,
    role: str,
    until: dt.datetime,
) -> tuple[pd.DataFrame, pd.DataFrame, dt.datetime, bool]:
    """The champion's and the challenger's log rows (in its `role`: shadow or canary)
    since the trial began, when it began, and whether the rows are a sample.

    Bounded as the monitor's reads are (`drift.max_rows_read`): past it, a shadow trial
    reads a sample of the champion's rows and the shadow rows of exactly those requests
    (pairs stay pairs); a canary trial samples each group by the same share."""
    started = _started(trial.tags.get("rollout.started"), until)
    log = PredictionLog(store)
    seen = log.window(view.name, started, until)  # one count for both reads
    fraction = bounded_fraction(seen.rows, view.drift.max_rows_read)
    mine = log.read(view.name, started, until, model_version=champion.version,
                    role=CHAMPION_ROLE, fraction=fraction, window=seen)  # fmt: skip
    if role == SHADOW_ROLE and fraction < 1:
        twins = [f"{rid}{SHADOW_SUFFIX}" for rid in mine["request_id"]]
        theirs = log.read_requests(view.name, twins, model_version=trial.version)
    else:
        theirs = log.read(view.name, started, until, model_version=trial.version, role=role,
                          fraction=fraction, window=seen)  # fmt: skip
    return mine, theirs, started, fraction < 1


def paired(
    view: FeatureView, store: FeatureStore, mine: pd.DataFrame, theirs: pd.DataFrame,
    until: dt.datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Shadow: the champion's labelled rows and the challenger's rows of the same
    requests, aligned."""
    if mine.empty or theirs.empty:
        return mine.iloc[0:0], theirs.iloc[0:0]
    theirs = theirs.assign(request_id=theirs["request_id"].str.removesuffix(SHADOW_SUFFIX))
    both = set(mine["request_id"]) & set(theirs["request_id"])
    labelled = labelled_logs(view, store, mine[mine["request_id"].isin(both)], until)
    labelled = labelled.drop_duplicates("request_id").reset_index(drop=True)
    twin = theirs.drop_duplicates("request_id").set_index("request_id")
    return labelled, twin.loc[labelled["request_id"]].reset_index()


def decide(
    view: FeatureView, store: FeatureStore, registry: Registry, until: dt.datetime, seed: int = 0
) -> LiveGate | None:
    """Look at the running trial (None: there is none) and say what it shows."""
    trial = registry.challenger(view.name)
    champion = registry.champion(view.name)
    if trial is None or champion is None:
        return None
    canary = trial.tags.get("rollout") == CANARY_ROLE
    role = CANARY_ROLE if canary else SHADOW_ROLE
    mine, theirs, started, sampled = _trial_logs(view, store, champion, trial, role, until)
    if canary:  # two groups of different entities, each with its labels
        labelled = labelled_logs(view, store, mine, until).reset_index(drop=True)
        twin = labelled_logs(view, store, theirs, until).reset_index(drop=True)
    else:
        labelled, twin = paired(view, store, mine, theirs, until)
    policy = view.rollout
    size = min(len(labelled), len(twin)) if canary else len(labelled)
    gate = LiveGate(view.name, champion.version, trial.version, CONTINUE, "", pairs=size,
                    metric=view.primary_metric)  # fmt: skip
    overdue = until - started >= dt.timedelta(days=policy.max_trial_days)
    if size < policy.min_labelled_pairs:
        what = ("labelled requests in the smaller group (champion / canary)" if canary
                else "labelled requests answered by both")  # fmt: skip
        gate.reason = f"{size} {what} so far (needs {policy.min_labelled_pairs})"
        if overdue:
            gate.outcome = DROPPED
            gate.reason += f"; no decision after {policy.max_trial_days:g} days"
        return gate
    rule = metric(view.primary_metric)
    y = labelled[view.label.name].reset_index(drop=True)
    y_b = twin[view.label.name].reset_index(drop=True) if canary else y
    out_a, out_b = logged_output(view, labelled), logged_output(view, twin)
    a = score_one(view, y, out_a, rule.name)
    b = score_one(view, y_b, out_b, rule.name)
    gate.champion_value, gate.challenger_value = a, b
    rng = np.random.default_rng(seed)
    n, m, diffs = len(y), len(y_b), []
    # a sample's rows come in blocks of requests answered together: whole blocks are
    # resampled (`predlog.sample`), as the monitor's bootstrap does
    draw_a = _resampler(labelled["id"] if sampled and "id" in labelled.columns else None, n)
    draw_b = _resampler(twin["id"] if sampled and "id" in twin.columns else None, m)
    for _ in range(DRAWS):
        idx = draw_a(rng)
        jdx = draw_b(rng) if canary else idx  # paired: the same requests
        va = score_one(view, y.iloc[idx], out_a.take(idx), rule.name)
        vb = score_one(view, y_b.iloc[jdx], out_b.take(jdx), rule.name)
        if va is not None and vb is not None and np.isfinite(va) and np.isfinite(vb):
            diffs.append(rule.worsening(va, vb))  # > 0: the champion is worse
    if not diffs or a is None or b is None:
        gate.reason = f"{rule.name} cannot be computed on these labels"
        return gate
    tail = (1 - policy.confidence) / 2
    gate.low, gate.high = (float(q) for q in np.quantile(diffs, [tail, 1 - tail]))
    interval = f"[{gate.low:+.4f}, {gate.high:+.4f}]"
    on = f"{m} canary and {n} champion" if canary else f"{n}"
    shown = (f"{rule.name} challenger {b:.4f} vs champion {a:.4f} on {on} labelled requests, "
             f"{policy.confidence:.0%} interval of the gain {interval}")  # fmt: skip
    if gate.low > 0:
        gate.outcome, gate.reason = PROMOTED, f"better: {shown}"
    elif gate.high < 0:
        gate.outcome, gate.reason = DROPPED, f"worse: {shown}"
    elif overdue:
        gate.outcome = DROPPED
        gate.reason = f"not shown better after {policy.max_trial_days:g} days: {shown}"
    else:
        gate.reason = f"undecided: {shown}"
    return gate


def _resampler(ids: pd.Series | None, n: int) -> Callable[[np.random.Generator], np.ndarray]:
    """One bootstrap draw of row positions: `n` rows, or as many whole sample blocks as the
    rows span when their ids are given (under `MIN_GROUPS` blocks: rows)."""
    members = None if ids is None else group_members(block_of(ids))
    if members is not None:
        return lambda rng: draw_groups(rng, members)
    return lambda rng: rng.integers(0, n, n)


def apply(registry: Registry, gate: LiveGate) -> bool:
    """Carry out a decision (promote or drop); False when the trial goes on."""
    if gate.outcome == CONTINUE:
        return False
    registry.end_trial(gate.view, gate.outcome, gate.reason)
    return True


def _started(value: str | None, until: dt.datetime) -> dt.datetime:
    """When the trial began (naive UTC, as the log stores time); unknown: a day ago."""
    if not value:
        return until - dt.timedelta(days=1)
    moment = dt.datetime.fromisoformat(value)
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment
