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

Fewer than `rollout.min_labelled_pairs` labelled pairs: the trial goes on (or ends at
the deadline). The decision and its figures are returned for the drift report and the
task log; the registry records the outcome on the challenger (`live_gate`,
`live_gate.reason`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ctloop.core.metrics import metric, score_one
from ctloop.features.view import FeatureView
from ctloop.monitoring.live import labelled_logs, logged_output
from ctloop.predlog.store import CHAMPION_ROLE, SHADOW_ROLE, PredictionLog
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore

SHADOW_SUFFIX = ".shadow"  # serving's: a shadow row's id is the caller's request id + this
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
    extra: dict[str, float] = field(default_factory=dict)


def paired_pairs(
    view: FeatureView, store: FeatureStore, registry: Registry, until: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame, dt.datetime] | None:
    """The champion's labelled rows of the trial and the challenger's rows of the same
    requests, aligned; None when no trial runs."""
    trial = registry.challenger(view.name)
    champion = registry.champion(view.name)
    if trial is None or champion is None:
        return None
    started = _started(trial.tags.get("rollout.started"), until)
    log = PredictionLog(store)
    mine = log.read(view.name, started, until, model_version=champion.version,
                    role=CHAMPION_ROLE)  # fmt: skip
    theirs = log.read(view.name, started, until, model_version=trial.version, role=SHADOW_ROLE)
    if mine.empty or theirs.empty:
        return mine.iloc[0:0], theirs.iloc[0:0], started
    theirs = theirs.assign(request_id=theirs["request_id"].str.removesuffix(SHADOW_SUFFIX))
    both = set(mine["request_id"]) & set(theirs["request_id"])
    labelled = labelled_logs(view, store, mine[mine["request_id"].isin(both)], until)
    labelled = labelled.drop_duplicates("request_id").reset_index(drop=True)
    twin = theirs.drop_duplicates("request_id").set_index("request_id")
    twin = twin.loc[labelled["request_id"]].reset_index()
    return labelled, twin, started


def decide(
    view: FeatureView, store: FeatureStore, registry: Registry, until: dt.datetime, seed: int = 0
) -> LiveGate | None:
    """Look at the running trial (None: there is none) and say what it shows."""
    found = paired_pairs(view, store, registry, until)
    if found is None:
        return None
    labelled, twin, started = found
    champion, trial = registry.champion(view.name), registry.challenger(view.name)
    if champion is None or trial is None:  # the trial ended meanwhile
        return None
    policy = view.rollout
    gate = LiveGate(view.name, champion.version, trial.version, CONTINUE, "",
                    pairs=len(labelled), metric=view.primary_metric)  # fmt: skip
    overdue = until - started >= dt.timedelta(days=policy.max_trial_days)
    if len(labelled) < policy.min_labelled_pairs:
        gate.reason = (f"{len(labelled)} labelled requests answered by both so far "
                       f"(needs {policy.min_labelled_pairs})")  # fmt: skip
        if overdue:
            gate.outcome = DROPPED
            gate.reason += f"; no decision after {policy.max_trial_days:g} days"
        return gate
    rule = metric(view.primary_metric)
    y = labelled[view.label.name].reset_index(drop=True)
    out_a, out_b = logged_output(view, labelled), logged_output(view, twin)
    a = score_one(view, y, out_a, rule.name)
    b = score_one(view, y, out_b, rule.name)
    gate.champion_value, gate.challenger_value = a, b
    rng = np.random.default_rng(seed)
    n, diffs = len(y), []
    for _ in range(DRAWS):
        idx = rng.integers(0, n, n)
        ya = y.iloc[idx]
        va = score_one(view, ya, out_a.take(idx), rule.name)
        vb = score_one(view, ya, out_b.take(idx), rule.name)
        if va is not None and vb is not None and np.isfinite(va) and np.isfinite(vb):
            diffs.append(rule.worsening(va, vb))  # > 0: the champion is worse
    if not diffs or a is None or b is None:
        gate.reason = f"{rule.name} cannot be computed on these labels"
        return gate
    tail = (1 - policy.confidence) / 2
    gate.low, gate.high = (float(q) for q in np.quantile(diffs, [tail, 1 - tail]))
    interval = f"[{gate.low:+.4f}, {gate.high:+.4f}]"
    shown = (f"{rule.name} challenger {b:.4f} vs champion {a:.4f} on {n} labelled requests, "
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
