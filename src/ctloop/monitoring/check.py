"""The drift and accuracy monitor: compares the champion's live traffic with its training.

Three signals, each gated by the view's `drift` policy:
- data drift per feature (normed Wasserstein / Jensen-Shannon, PSI reported alongside,
  unseen categories and missing-rate changes), dataset drift when the share of drifted
  features reaches `drift_share`;
- prediction drift: Jensen-Shannon distance of the predicted-class shares, and for a
  binary score or a regression value the normed Wasserstein distance of its distribution;
- accuracy decay: once labels for logged entities land, the live primary metric of the
  view's kind (AUC / macro-F1 / RMSE ...) against the model's own validation figure.
A window smaller than `min_rows` never raises an alarm (raw tests on tiny windows flag
noise); it reports "not enough data". Every check writes its rows to `drift_report`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.metrics import (
    Output,
    bootstrap_se,
    metric,
    output_from_values,
    score,
    score_one,
)
from ctloop.core.stats import (
    feature_distance,
    js_distance,
    noise_floor,
    normed_wasserstein,
    z_for,
)
from ctloop.features.view import FeatureView
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from ctloop.training.fit import REFERENCE_ARTIFACT

log = logging.getLogger(__name__)

OK, DRIFT, DECAY, NOT_ENOUGH, NO_CHAMPION = "ok", "drift", "decay", "not_enough_data", "no_champion"


@dataclass
class Finding:
    """One row of the drift report."""

    kind: str  # data / prediction / accuracy / dataset
    feature: str
    statistic: str
    value: float | None
    threshold: float | None
    drifted: bool


@dataclass
class MonitorResult:
    """What one monitor check found and decided."""

    check_id: str
    view: str
    model_version: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int
    labelled_rows: int = 0
    status: str = OK
    findings: list[Finding] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    live_metrics: dict[str, float] = field(default_factory=dict)
    onset: str | None = None  # estimated first day of a concept change (ISO), on decay
    onset_found: str | None = None  # the newest labelled day that showed it

    @property
    def retrain(self) -> bool:
        return self.status in (DRIFT, DECAY)

    def summary(self) -> str:
        """One line for the task log."""
        head = (
            f"{self.view} v{self.model_version}: {self.status.upper()} on {self.rows} "
            f"predictions {self.window_start:%Y-%m-%d %H:%M} .. {self.window_end:%Y-%m-%d %H:%M}"
        )
        return head + (f" ({'; '.join(self.reasons)})" if self.reasons else "")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        out["retrain"] = self.retrain
        out["drifted_features"] = [
            f.feature for f in self.findings if f.kind == "data" and f.drifted
        ]
        return out


def _clean(value: float | None) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
    )


def last_window_end(store: FeatureStore, view: str) -> dt.datetime | None:
    """Where the next check starts, so each check reads only new traffic, and a window too
    small to judge is not thrown away: after checks whose drift window had too few rows
    (even if they found accuracy decay, which has its own minimum), the next one starts
    where they started, until the rows add up to `drift.min_rows`. A window was judged
    when its check wrote a `dataset` row."""
    import sqlalchemy as sa

    table = store.drift_report
    mine = table.c.feature_view == view
    judged = sa.select(sa.func.max(table.c.window_end)).where(mine, table.c.kind == "dataset")
    with store.begin() as conn:
        end = conn.execute(judged).scalar_one_or_none()
        if end is not None:
            return end
        first = sa.select(sa.func.min(table.c.window_start)).where(mine, table.c.kind == "status")
        return conn.execute(first).scalar_one_or_none()


def last_drift_trigger(store: FeatureStore, view: str) -> dt.datetime | None:
    """When the monitor last triggered a drift retrain for this view (for the cooldown)."""
    import sqlalchemy as sa

    table = store.drift_report
    query = (
        sa.select(sa.func.max(table.c.created_at))
        .where(table.c.feature_view == view)
        .where(table.c.kind == "decision")
        .where(table.c.statistic == "retrain_triggered")
        .where(table.c.drifted.is_(True))
    )
    with store.begin() as conn:
        return conn.execute(query).scalar_one_or_none()


def data_drift(view: FeatureView, reference: dict[str, Any], logs: pd.DataFrame) -> list[Finding]:
    """Per-feature distance, PSI, unseen categories and missing-rate change.

    A feature drifts when its distance passes the larger of the view's threshold and the
    window's noise floor (`stats.noise_floor` at the check's `false_alarm_rate`, shared by
    all features), so small windows do not alarm on sampling noise; the floor is reported
    as `noise_floor`: the smallest shift this window can see.
    """
    policy = view.drift
    present = [f for f in view.features if reference["features"].get(f.name) is not None
               and f.name in logs.columns]  # fmt: skip
    z = z_for(policy.false_alarm_rate, len(present))
    out: list[Finding] = []
    for feature in present:
        ref = reference["features"][feature.name]
        column = logs[feature.name]
        dist = feature_distance(feature.name, ref, column)
        n = int(column.notna().sum()) if feature.is_numeric else len(column)
        floor = noise_floor(ref, n, z)
        limit = policy.numeric_threshold if feature.is_numeric else policy.categorical_threshold
        limit = max(limit, floor)
        drifted = bool(math.isfinite(dist.value) and dist.value > limit)
        out.append(Finding("data", feature.name, dist.statistic, dist.value, limit, drifted))
        out.append(Finding("data", feature.name, "noise_floor", floor, None, False))
        out.append(Finding("data", feature.name, "psi", dist.psi, policy.psi_threshold,
                           bool(dist.psi > policy.psi_threshold)))  # fmt: skip
        change = abs(dist.missing_rate_cur - dist.missing_rate_ref)
        out.append(Finding("data", feature.name, "missing_rate_change", change, 0.1, change > 0.1))
        if not feature.is_numeric:
            out.append(Finding("data", feature.name, "unseen_share", dist.unseen_share,
                               policy.categorical_threshold,
                               dist.unseen_share > policy.categorical_threshold))  # fmt: skip
    return out


def _event_dates(view: FeatureView, logs: pd.DataFrame) -> pd.Series:
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
    keyed = logs.assign(_day=_event_dates(view, logs), _entity=logs["entity_id"].astype(str))
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
    days = _event_dates(view, logs)
    labels = store.labels_for_days(view, days.min().date(), days.max().date(), until)
    return _labelled(view, logs, labels)


def change_onset(
    view: FeatureView, joined: pd.DataFrame, baseline: float, limit: float, z: float
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
        noise = rule.in_tolerance_units(z * metric_noise(view, rows, rule.name), baseline)
        if rule.worsening(value, baseline) <= max(limit, noise):
            break
        onset = pd.Timestamp(day).date().isoformat()
        newest = newest or onset
    return (onset, newest) if onset and newest else None


def metric_noise(view: FeatureView, joined: pd.DataFrame, name: str, seed: int = 0) -> float:
    """Bootstrap standard error of the live metric on these labelled rows: a few hundred
    labels move macro-F1 or AUC by points on their own, which a fixed decay limit would
    read as decay."""
    return bootstrap_se(view, joined[view.label.name], logged_output(view, joined), name, seed)


def prediction_drift(
    view: FeatureView, reference: dict[str, Any], logs: pd.DataFrame
) -> list[Finding]:
    """Has what the model answers moved? Class shares (Jensen-Shannon) for classes; the
    score's (binary) or the value's (regression) distribution (normed Wasserstein)."""
    policy = view.drift
    ref = reference.get("prediction", {})
    z = z_for(policy.false_alarm_rate, 2 if view.label.is_binary else 1)  # tests below
    out: list[Finding] = []
    shares: dict[str, float] = {}
    if not view.label.is_regression:
        # models trained before label kinds stored the shares at the top level
        table = ref["shares"] if isinstance(ref.get("shares"), dict) else ref
        shares = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if shares:
        cur = logs["prediction"].astype(str).value_counts(normalize=True).to_dict()
        dist = js_distance(shares, cur)
        counted = {"type": "categorical", "shares": shares, "count": ref.get("count", 0)}
        floor = noise_floor(counted, len(logs), z)
        limit = max(policy.prediction_threshold, floor)
        out.append(Finding("prediction", "prediction", "jensen_shannon", dist, limit,
                           bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    distribution = ref.get("distribution")
    if distribution is not None:
        output = logged_output(view, logs)
        column = output.values if view.label.is_regression else output.score_column(view)
        if column is not None:
            cur = np.asarray(column, dtype=float)
            dist = normed_wasserstein(np.asarray(distribution["sample"], dtype=float), cur)
            floor = noise_floor({"type": "numeric", **distribution}, len(cur), z)
            limit = max(policy.prediction_threshold, floor)
            what = "value" if view.label.is_regression else "score"
            out.append(Finding("prediction", what, "normed_wasserstein", dist, limit,
                               bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    return out


def check(
    view: FeatureView,
    store: FeatureStore,
    registry: Registry,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> MonitorResult:
    """Compare the champion's logged traffic in [since, until) with its training reference."""
    import mlflow.artifacts

    until = until or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    since = since or last_window_end(store, view.name) or (until - dt.timedelta(days=1))
    champion = registry.champion(view.name)
    result = MonitorResult(uuid.uuid4().hex, view.name, None, since, until, 0)
    if champion is None:
        result.status = NO_CHAMPION
        result.reasons.append("no champion to monitor")
        return result
    result.model_version = champion.version
    logs = store.read_prediction_logs(view.name, since, until, model_version=champion.version)
    result.rows = len(logs)
    policy = view.drift
    enough = len(logs) >= policy.min_rows

    import mlflow

    mlflow.set_tracking_uri(registry.tracking_uri)
    reference = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{REFERENCE_ARTIFACT}")
    findings: list[Finding] = []
    drifted: list[str] = []
    distance_findings: list[Finding] = []
    pred_findings: list[Finding] = []
    dataset_drift = pred_drift = False
    if enough:
        findings = data_drift(view, reference, logs)
        distance_findings = [
            f for f in findings if f.statistic in ("normed_wasserstein", "jensen_shannon")
        ]
        drifted = [f.feature for f in distance_findings if f.drifted]
        share = len(drifted) / max(len(distance_findings), 1)
        dataset_drift = share >= policy.drift_share
        findings.append(
            Finding("dataset", "*", "drifted_share", share, policy.drift_share, dataset_drift)
        )
        pred_findings = prediction_drift(view, reference, logs)
        findings.extend(pred_findings)
        pred_drift = any(f.drifted for f in pred_findings)
    else:
        result.reasons.append(
            f"not enough data: {len(logs)} predictions (minimum {policy.min_rows}); the next "
            "check reads this window again with the traffic that follows"
        )

    # Labels land days late, so live accuracy looks back `accuracy_window_days` over this
    # champion's predictions and joins the labels that have landed by `until`; it has its
    # own minimum (`min_labelled_rows`), independent of the drift window's size.
    lookback = until - dt.timedelta(days=policy.accuracy_window_days)
    if lookback < since:
        scored = store.read_prediction_logs(
            view.name, lookback, until, model_version=champion.version
        )
    else:  # an accumulated window longer than the look-back: only its recent part
        scored = logs if logs.empty else logs.loc[pd.to_datetime(logs["created_at"]) >= lookback]
    joined = labelled_logs(view, store, scored, until)
    live = score(view, joined[view.label.name], logged_output(view, joined)) if len(joined) else {}
    n_lab = len(joined)
    result.labelled_rows, result.live_metrics = n_lab, live
    decay = False
    name = view.primary_metric
    rule = metric(name)
    baseline = reference.get("validation_metrics", {}).get(name)
    limit = float(policy.max_accuracy_drop or 0)
    if n_lab >= policy.min_labelled_rows and baseline is not None and name in live:
        # the noise of both figures (the live one at this many labels, the validation one
        # at its own) raises the limit (one-sided)
        se_val = float(reference.get("validation_se", {}).get(name, 0.0))
        se_live = metric_noise(view, joined, name)
        spread = z_for(policy.false_alarm_rate, 1) * math.hypot(se_live, se_val)
        limit = max(limit, rule.in_tolerance_units(spread, baseline))
        drop = rule.worsening(live[name], baseline)
        decay = drop > limit
        findings.append(Finding("accuracy", name, "drop_vs_validation", drop, limit, decay))
        findings.append(Finding("accuracy", name, "live", live[name], None, False))
        if decay:
            change = _dated_change(view, store, lookback, until, baseline)
            if change is not None:
                result.onset, result.onset_found = change
    result.findings = findings

    if dataset_drift:
        result.reasons.append(
            f"data drift in {len(drifted)}/{len(distance_findings)} features: {', '.join(drifted)}"
        )
    if pred_drift:
        moved = ", ".join(f"{f.feature} {f.statistic} {f.value:.3f}" for f in pred_findings
                          if f.drifted)  # fmt: skip
        result.reasons.append(f"prediction drift ({moved})")
    if decay:
        result.reasons.append(
            f"accuracy decay: live {name} {live[name]:.3f} vs validation {baseline:.3f} "
            f"on {n_lab} labelled predictions (limit {rule.tolerance_text(limit)})"
            + (f", change from {result.onset}" if result.onset else "")
        )
    if decay:
        result.status = DECAY
    elif not enough:
        result.status = NOT_ENOUGH
    else:
        result.status = DRIFT if (dataset_drift or pred_drift) else OK
    return result


def _dated_change(
    view: FeatureView,
    store: FeatureStore,
    lookback: dt.datetime,
    until: dt.datetime,
    baseline: float,
) -> tuple[str, str] | None:
    """Date a change on every version's labelled answers of the look-back, not only the
    champion's: after a promotion the champion has answered for a day or two only."""
    everyone = store.read_prediction_logs(view.name, lookback, until)
    if everyone.empty:
        return None
    policy = view.drift
    return change_onset(
        view, labelled_logs(view, store, everyone, until), baseline,
        float(policy.max_accuracy_drop or 0), z_for(policy.false_alarm_rate, 1),
    )  # fmt: skip


def cooldown_blocks(store: FeatureStore, view: FeatureView, now: dt.datetime) -> str | None:
    """Why a drift retrain must wait, or None when the cooldown allows it."""
    last = last_drift_trigger(store, view.name)
    if last is None:
        return None
    wait = dt.timedelta(hours=view.drift.cooldown_hours)
    if now - last < wait:
        return f"cooldown: last drift retrain triggered at {last:%Y-%m-%d %H:%M} (< {wait} ago)"
    return None


def record(store: FeatureStore, result: MonitorResult, triggered: bool | None = None) -> int:
    """Write the check's findings (and the trigger decision) to `drift_report`."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    base = {
        "check_id": result.check_id,
        "feature_view": result.view,
        "model_version": result.model_version,
        "window_start": result.window_start,
        "window_end": result.window_end,
        "n_reference": 0,
        "n_current": result.rows,
        "created_at": now,
    }
    rows = [
        {**base, "kind": f.kind, "feature": f.feature, "statistic": f.statistic,
         "value": _clean(f.value), "threshold": _clean(f.threshold), "drifted": f.drifted}
        for f in result.findings
    ]  # fmt: skip
    rows.append({**base, "kind": "status", "feature": "*", "statistic": result.status,
                 "value": None, "threshold": None, "drifted": result.retrain})  # fmt: skip
    if triggered is not None:
        rows.append({**base, "kind": "decision", "feature": "*", "statistic": "retrain_triggered",
                     "value": None, "threshold": None, "drifted": triggered})  # fmt: skip
    with store.begin() as conn:
        conn.execute(store.drift_report.insert(), rows)
    return len(rows)


def findings_json(result: MonitorResult) -> str:
    """The findings as compact JSON, for a DAG run's conf."""
    data = result.to_dict()
    data["findings"] = [f for f in data["findings"] if f["drifted"]]
    return json.dumps(data, default=str)


def monitor_step(
    view: FeatureView,
    store: FeatureStore,
    registry: Registry,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    ct_in_flight: bool = False,
    report_to_mlflow: bool = True,
) -> dict[str, Any]:
    """One monitor run: check, decide whether to retrain, record it all. Returns the decision.

    A retrain is asked for on drift or decay, unless a CT run of the view is in flight
    (the orchestrator tells) or the last drift-triggered retrain is inside the cooldown.
    """
    result = check(view, store, registry, since, until)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    blocked = None
    if result.retrain:
        blocked = (
            "a CT run is already in flight" if ct_in_flight else cooldown_blocks(store, view, now)
        )
    trigger = result.retrain and blocked is None
    record(store, result, triggered=trigger if result.retrain else None)
    if result.onset is not None and result.onset_found is not None:
        # every later run learns from the new concept
        registry.record_change_onset(view.name, result.onset, result.onset_found)
    report_run = None
    if report_to_mlflow and result.status not in (NOT_ENOUGH, NO_CHAMPION):
        from ctloop.monitoring.report import log_to_mlflow

        report_run = log_to_mlflow(registry, result)
    line = result.summary() + (f"; retrain NOT triggered: {blocked}" if blocked else "")
    line += "; retrain triggered" if trigger else ""
    log.info(line)
    reason = "; ".join(result.reasons)
    return {
        "summary": line,
        "status": result.status,
        "trigger": trigger,
        "blocked": blocked,
        "check_id": result.check_id,
        "model_version": result.model_version,
        "report_run_id": report_run,
        "conf": {
            "trigger": "drift",
            "reason": reason,
            "check_id": result.check_id,
            "onset": result.onset,
            "findings": json.loads(findings_json(result)),
        },
        "result": result.to_dict(),
    }
