"""Live metric decay on the prediction log: logged answers joined to labels that landed.

Labels land days after a prediction, so the live metric of the view's kind (AUC,
macro-F1, RMSE ...) is scored on the logged predictions whose entity-day has a label by
now, and a decay is dated: the first day of the trailing run of days worse than the
model's validation figure (the change onset the next training run learns from).
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd

from ctloop.core.metrics import Output, bootstrap_se, metric, output_from_values, score_one
from ctloop.core.stats import z_for
from ctloop.features.view import FeatureView
from ctloop.predlog.sample import Window, block_of
from ctloop.predlog.store import CHAMPION_ROLE, PredictionLog
from ctloop.store.features import FeatureStore


def event_dates(view: FeatureView, logs: pd.DataFrame) -> pd.Series:
    """The event date of each prediction: as sent with the request, else the log day."""
    if view.event_date in logs.columns:
        sent = pd.to_datetime(logs[view.event_date], errors="coerce")
        return sent.fillna(pd.to_datetime(logs["created_at"])).dt.normalize()
    return pd.to_datetime(logs["created_at"]).dt.normalize()


def logged_output(view: FeatureView, logs: pd.DataFrame) -> Output:
    """The logged answers as a model output: the class probabilities (in view order) for
    classification, the values for regression."""
    if view.label.is_regression:
        return output_from_values(pd.to_numeric(logs["prediction"]).to_numpy(dtype=float))
    classes = view.label.class_list
    proba = logs[[f"proba_{c}" for c in classes]].to_numpy(dtype=float)
    return Output(logs["prediction"].astype(str).tolist(), proba=proba)


def _labelled(view: FeatureView, logs: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Logged predictions joined to the labels that have landed (entity and event day)."""
    if logs.empty or labels.empty or "entity_id" not in logs.columns:
        return logs.iloc[0:0]
    keyed = logs.assign(_day=event_dates(view, logs), _entity=logs["entity_id"].astype(str))
    lab = labels.assign(
        _day=pd.to_datetime(labels[view.event_date]).dt.normalize(),
        _entity=labels[view.entity].astype(str),
    )[["_entity", "_day", view.label.name]]
    return keyed.merge(lab, on=["_entity", "_day"], how="inner")


def labelled_logs(
    view: FeatureView, store: FeatureStore, logs: pd.DataFrame, until: dt.datetime
) -> pd.DataFrame:
    """These logged predictions joined to their labels that had landed by `until`."""
    if logs.empty:
        return logs
    days = event_dates(view, logs)
    labels = store.labels_for_days(view, days.min().date(), days.max().date(), until)
    return _labelled(view, logs, labels)


def change_onset(
    view: FeatureView,
    joined: pd.DataFrame,
    baseline: float,
    limit: float,
    z: float,
    sampled: bool = False,
) -> tuple[str, str] | None:
    """(onset, found): the first day of the trailing run of days whose live metric is
    worse than the model's validation figure by more than `limit` (or than that day's own
    noise, z bootstrap standard errors, when larger), and the newest labelled day that
    showed it. Both are event dates, so a run as of D can tell whether the change was
    known before D. Days under 30 labels neither start nor break the run."""
    rule = metric(view.primary_metric)
    onset, newest = None, None
    for day, rows in sorted(joined.groupby("_day"), key=lambda item: item[0], reverse=True):
        if len(rows) < 30:
            continue
        value = score_one(view, rows[view.label.name], logged_output(view, rows), rule.name)
        if value is None or not math.isfinite(value):
            continue
        se = metric_noise(view, rows, rule.name, sampled=sampled)
        noise = rule.in_tolerance_units(z * se, baseline)
        if rule.worsening(value, baseline) <= max(limit, noise):
            break
        onset = pd.Timestamp(day).date().isoformat()
        newest = newest or onset
    return (onset, newest) if onset and newest else None


def metric_noise(
    view: FeatureView, joined: pd.DataFrame, name: str, seed: int = 0, sampled: bool = False
) -> float:
    """Bootstrap standard error of the live metric on these labelled rows: a few hundred
    labels move macro-F1 or AUC by points on their own, which a fixed decay limit would
    read as decay. Rows of a `sampled` read come in blocks of consecutive requests
    (`predlog.sample`): whole blocks are resampled."""
    groups = block_of(joined["id"]) if sampled and "id" in joined.columns else None
    output = logged_output(view, joined)
    return bootstrap_se(view, joined[view.label.name], output, name, seed, groups)


def dated_change(
    view: FeatureView,
    store: FeatureStore,
    lookback: dt.datetime,
    until: dt.datetime,
    baseline: float,
    fraction: float,
    window: Window,
) -> tuple[str, str] | None:
    """Date a change on every version's labelled answers of the look-back, not only the
    champion's: after a promotion the champion has answered for a day or two only. Read
    at the look-back's bounded `fraction`, in the `window` the check has counted already."""
    log = PredictionLog(store)
    everyone = log.read(view.name, lookback, until, role=CHAMPION_ROLE, fraction=fraction,
                        window=window)  # fmt: skip
    if everyone.empty:
        return None
    policy = view.drift
    return change_onset(
        view, labelled_logs(view, store, everyone, until), baseline,
        float(policy.max_accuracy_drop or 0), z_for(policy.false_alarm_rate, 1), fraction < 1,
    )  # fmt: skip
