"""Training-serving skew: do callers send the features the store holds?

A model learns from `<fv>_features`; a caller that builds its request from another copy
of the data (a cache, a join of its own, a unit change) sends values the model never saw
for that entity, which no drift statistic catches while the distributions match. For the
logged requests that name an entity and the event date their features describe, each
feature the caller sent (not one serving took from the store) is compared with the
store's row of that entity and day: equal when both are missing, or the same category, or
numbers within 1e-9 relative. A request without an event date is not compared: the day
its features describe is not known (the newest row of the log day may be newer than what
the caller had). Per feature, from `MIN_COMPARED` compared requests on: the share that
differed, flagged above `drift.max_skew_rate`, and how many were compared. Skew is
reported, not retrained on: a new model cannot fix a caller that sends other numbers.

Each compared request costs a store lookup, so at most `MAX_COMPARED` requests (a uniform
sample of those that can be paired) are compared: a rate near the 1 % default limit is
then known to about +-0.07 points, and a check of a busy window spends about a second
here instead of four.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctloop.features.view import FeatureView
from ctloop.monitoring.live import event_dates
from ctloop.monitoring.result import Finding
from ctloop.store.features import FeatureStore

KIND = "skew"
MIN_COMPARED = 30  # fewer compared requests: no rate (one odd request is not 100 % skew)
MAX_COMPARED = 20_000


def skew_findings(view: FeatureView, store: FeatureStore, logs: pd.DataFrame) -> list[Finding]:
    """Per feature: mismatch rate and rows compared (none when no request can be paired)."""
    if logs.empty or "entity_id" not in logs.columns or view.event_date not in logs.columns:
        return []
    sent = logs[logs["entity_id"].notna() & logs[view.event_date].notna()]
    if sent.empty:
        return []
    if len(sent) > MAX_COMPARED:  # fixed seed: the same rows on every check of the window
        sent = sent.sample(n=MAX_COMPARED, random_state=0).sort_index()
    days = event_dates(view, sent)
    entities = sent["entity_id"].astype(str).tolist()
    rows = store.features_of(view, entities, days.min().date(), days.max().date())
    if rows.empty:
        return []
    stored = rows.assign(
        _entity=rows[view.entity].astype(str),
        _day=pd.to_datetime(rows[view.event_date]).dt.normalize(),
    ).drop(columns=[view.entity, view.event_date])
    keyed = sent.assign(_entity=sent["entity_id"].astype(str), _day=days)
    names = view.feature_names
    pairs = keyed[
        ["_entity", "_day", *[n for n in names if n in keyed.columns]]
        + (["from_store"] if "from_store" in keyed.columns else [])
    ].merge(stored[["_entity", "_day", *names]], on=["_entity", "_day"], suffixes=("", "__store"))
    if pairs.empty:
        return []
    supplied = (
        pairs["from_store"].fillna("").astype(str).str.split(",")
        if "from_store" in pairs.columns
        else pd.Series([[]] * len(pairs), index=pairs.index)
    )
    findings = []
    for feature in view.features:
        name = feature.name
        if name not in pairs.columns:
            continue
        by_caller = ~supplied.map(lambda got, n=name: n in got).to_numpy(dtype=bool)
        if not by_caller.any():
            continue
        if by_caller.sum() < MIN_COMPARED:
            continue
        mine, theirs = pairs[name][by_caller], pairs[f"{name}__store"][by_caller]
        differ = _differ(mine, theirs, feature.is_numeric)
        rate = float(differ.mean())
        limit = view.drift.max_skew_rate
        findings.append(Finding(KIND, name, "mismatch_rate", rate, limit, rate > limit))
        findings.append(Finding(KIND, name, "compared_rows", float(len(differ)), None, False))
    return findings


def _differ(sent: pd.Series, stored: pd.Series, numeric: bool) -> np.ndarray:
    """Which sent values differ from the store's (missing equals missing only)."""
    missing_a, missing_b = sent.isna().to_numpy(), stored.isna().to_numpy()
    if numeric:
        a = pd.to_numeric(sent, errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(stored, errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            equal = np.abs(a - b) <= 1e-9 * np.maximum(1.0, np.abs(b))
    else:
        equal = sent.astype(str).to_numpy() == stored.astype(str).to_numpy()
    both_missing = missing_a & missing_b
    return ~(both_missing | (equal & ~missing_a & ~missing_b))
