"""The drift and accuracy monitor: compares the champion's live traffic with its training.

Three signals, each gated by the view's `drift` policy:
- data drift per feature (normed Wasserstein / Jensen-Shannon, PSI reported alongside,
  unseen categories and missing-rate changes), dataset drift when the share of drifted
  features reaches `drift_share`;
- prediction drift: Jensen-Shannon distance of the predicted-class shares, and for a
  binary score or a regression value the normed Wasserstein distance of its distribution;
- accuracy decay: once labels for logged entities land, the live primary metric of the
  view's kind (AUC / macro-F1 / RMSE ...) against the model's own validation figure;
- training-serving skew (reported, never a retrain): the share of feature values callers
  sent that differ from the store's row of the same entity and day (`skew`).
A window smaller than `min_rows` never raises an alarm (raw tests on tiny windows flag
noise); it reports "not enough data". Every check writes its rows to `drift_report`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd

from ctloop.core.metrics import metric, score
from ctloop.core.stats import z_for
from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.monitoring import livegate
from ctloop.monitoring.drift import data_drift, prediction_drift, summarize_rows
from ctloop.monitoring.live import dated_change, labelled_logs, logged_output, metric_noise
from ctloop.monitoring.report import Evidence, log_to_mlflow
from ctloop.monitoring.reports import DriftReports
from ctloop.monitoring.result import (
    DECAY,
    DRIFT,
    NO_CHAMPION,
    NOT_ENOUGH,
    OK,
    Finding,
    MonitorResult,
    findings_json,
)
from ctloop.monitoring.skew import skew_findings
from ctloop.predlog import retention, summaries
from ctloop.predlog.sample import bounded_fraction, in_sample
from ctloop.predlog.store import CHAMPION_ROLE, PredictionLog
from ctloop.registry import Registry
from ctloop.store.dates import utc_now
from ctloop.store.features import FeatureStore

log = logging.getLogger(__name__)


def check(
    view: FeatureView,
    store: FeatureStore,
    registry: Registry,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> MonitorResult:
    """Compare the champion's logged traffic in [since, until) with its training reference."""
    return check_with_evidence(view, store, registry, since, until)[0]


def check_with_evidence(
    view: FeatureView,
    store: FeatureStore,
    registry: Registry,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> tuple[MonitorResult, Evidence | None]:
    """`check`, plus what it measured (reference profile and window), for the report's
    plots; None when there was nothing to measure (no champion)."""
    until = until or utc_now()
    since = since or DriftReports(store).last_window_end(view.name)
    since = since or (until - dt.timedelta(days=1))
    champion = registry.champion(view.name)
    result = MonitorResult(uuid.uuid4().hex, view.name, None, since, until, 0)
    if champion is None:
        result.status = NO_CHAMPION
        result.reasons.append("no champion to monitor")
        return result, None
    result.model_version = champion.version
    predictions = PredictionLog(store)
    policy = view.drift
    # a busy service logs millions of rows a day: past `max_rows_read` the check reads a
    # sample (whole blocks of row ids), so its time and memory do not grow with the traffic
    seen = predictions.window(view.name, since, until)
    window_rows = seen.rows
    fraction = bounded_fraction(window_rows, policy.max_rows_read)
    logs = predictions.read(
        view.name, since, until, model_version=champion.version, role=CHAMPION_ROLE,
        fraction=fraction, window=seen,
    )  # fmt: skip
    reference = registry.reference_profile(champion)
    if reference is None:
        raise CtloopError(
            f"{view.name} champion v{champion.version} has no training run, so no profile "
            "to measure drift against"
        )
    # Where the database can summarize the window (MariaDB/MySQL, the view's typed log:
    # counts per bucket, O(bins) over the wire), drift is measured on its summaries of up
    # to `max_rows_summarized` rows (every row, or an even sample past that); elsewhere
    # on the rows read (all of them, or the bounded sample).
    counted = bounded_fraction(window_rows, policy.max_rows_summarized)
    window = summaries.summarize(
        predictions, view, reference, since, until, champion.version, CHAMPION_ROLE, counted,
        seen,
    )  # fmt: skip
    if window is None:
        window = summarize_rows(view, reference, logs)
        result.rows = len(logs) if fraction == 1 else round(len(logs) / fraction)
    else:
        result.rows = window.rows if counted == 1 else round(window.rows / counted)
        result.drift_rows = window.rows
    result.sampled_rows = None if fraction == 1 else len(logs)
    enough = window.rows >= policy.min_rows
    findings: list[Finding] = []
    drifted: list[str] = []
    distance_findings: list[Finding] = []
    pred_findings: list[Finding] = []
    dataset_drift = pred_drift = False
    if enough:
        findings = data_drift(view, reference, window)
        distance_findings = [
            f for f in findings if f.statistic in ("normed_wasserstein", "jensen_shannon")
        ]
        drifted = [f.feature for f in distance_findings if f.drifted]
        share = len(drifted) / max(len(distance_findings), 1)
        dataset_drift = share >= policy.drift_share
        findings.append(
            Finding("dataset", "*", "drifted_share", share, policy.drift_share, dataset_drift)
        )
        pred_findings = prediction_drift(view, reference, window)
        findings.extend(pred_findings)
        pred_drift = any(f.drifted for f in pred_findings)
    else:
        result.reasons.append(
            f"not enough data: {window.rows} predictions (minimum {policy.min_rows}); the next "
            "check reads this window again with the traffic that follows"
        )

    # Labels land days late, so live accuracy looks back `accuracy_window_days` over this
    # champion's predictions and joins the labels that have landed by `until`; it has its
    # own minimum (`min_labelled_rows`), independent of the drift window's size.
    lookback = until - dt.timedelta(days=policy.accuracy_window_days)
    if lookback < since:  # the days before the window, and the window's rows again
        # the look-back may hold many busy days: past ten reads' worth, estimated
        before = predictions.window(view.name, lookback, since, 10 * policy.max_rows_read)
        wide = bounded_fraction(window_rows + before.rows, policy.max_rows_read)
        older = predictions.read(view.name, lookback, since, model_version=champion.version,
                                 role=CHAMPION_ROLE, fraction=wide, window=before)  # fmt: skip
        # the window's sample cut down to the look-back's share (the hash nests), not read
        # twice
        recent = logs if logs.empty else logs[in_sample(logs["id"], wide)]
        if older.empty or recent.empty:
            scored = recent if older.empty else older
        else:
            scored = pd.concat([older, recent], ignore_index=True)
    else:  # an accumulated window longer than the look-back: only its recent part
        wide = fraction  # the look-back is inside the window: its share bounds it too
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
        se_live = metric_noise(view, joined, name, sampled=wide < 1)
        spread = z_for(policy.false_alarm_rate, 1) * math.hypot(se_live, se_val)
        limit = max(limit, rule.in_tolerance_units(spread, baseline))
        drop = rule.worsening(live[name], baseline)
        decay = drop > limit
        findings.append(Finding("accuracy", name, "drop_vs_validation", drop, limit, decay))
        findings.append(Finding("accuracy", name, "live", live[name], None, False))
        if decay:
            counted_back = seen + before if lookback < since else seen  # [lookback, until)
            change = dated_change(view, store, lookback, until, baseline, wide, counted_back)
            if change is not None:
                result.onset, result.onset_found = change
    skew = skew_findings(view, store, logs)
    findings.extend(skew)
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
    skewed = [f for f in skew if f.drifted]
    if skewed:  # reported, not retrained on: the caller must send the store's values
        worst = ", ".join(f"{f.feature} {f.value:.1%}" for f in skewed)
        result.notes.append(
            f"training-serving skew: sent features differ from the store's row of the same "
            f"entity and day ({worst}; limit {view.drift.max_skew_rate:.1%})"
        )
    if decay:
        result.status = DECAY
    elif not enough:
        result.status = NOT_ENOUGH
    else:
        result.status = DRIFT if (dataset_drift or pred_drift) else OK
    return result, Evidence(reference, logs, _answers(view, logs))


def _answers(view: FeatureView, logs: pd.DataFrame) -> Any:
    """The binary score or the regression value of each logged answer (None otherwise)."""
    if logs.empty or not (view.label.is_binary or view.label.is_regression):
        return None
    output = logged_output(view, logs)
    return output.values if view.label.is_regression else output.score_column(view)


def trial_blocks(registry: Registry, view: FeatureView) -> str | None:
    """Why a drift retrain must wait for the live gate: a challenger retrained on drift is
    on trial (a new one would take its place before its labels land, again each check).
    A trial of a scheduled or manual candidate, trained before the change, gives way."""
    trial = registry.challenger(view.name)
    if trial is None or trial.tags.get("trigger") != "drift":
        return None
    return f"drift-retrained version {trial.version} is on live trial; the live gate decides first"


def cooldown_blocks(store: FeatureStore, view: FeatureView, now: dt.datetime) -> str | None:
    """Why a drift retrain must wait, or None when the cooldown allows it."""
    last = DriftReports(store).last_drift_trigger(view.name)
    if last is None:
        return None
    wait = dt.timedelta(hours=view.drift.cooldown_hours)
    if now - last < wait:
        return f"cooldown: last drift retrain triggered at {last:%Y-%m-%d %H:%M} (< {wait} ago)"
    return None


def _prune(
    view: FeatureView, store: FeatureStore, keep_days: int, now: dt.datetime
) -> tuple[retention.Pruned | None, str]:
    """The retention after a check, and its words for the check's line. It runs after the
    check is recorded and never fails it: a retention too short for what the monitor
    reads, or a database error while deleting, is said in the line and the rows stay (the
    drift decision and the live gate matter more than disk)."""
    try:
        keep_from = DriftReports(store).last_window_end(view.name)
        done = retention.prune(PredictionLog(store), view, keep_days, now, keep_from=keep_from)
    except retention.RetentionError as refused:
        return None, f"log retention NOT applied: {refused}"
    except Exception as exc:
        log.warning("log retention of %s failed: %r", view.name, exc)
        return None, f"log retention failed ({type(exc).__name__}); retried at the next check"
    dropped = f" ({done.days_text})" if done.days_text else ""
    return done, (f"log retention {keep_days} days: {done.deleted} rows logged before "
                  f"{done.before:%Y-%m-%d %H:%M} deleted{dropped}")  # fmt: skip


def monitor_step(
    view: FeatureView,
    store: FeatureStore,
    registry: Registry,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    ct_in_flight: bool = False,
    report_to_mlflow: bool = True,
    on_promoted: Callable[[str], None] | None = None,
    keep_days: int | None = None,
) -> dict[str, Any]:
    """One monitor run: check, decide whether to retrain, look at a live trial, record it
    all; then, with `keep_days`, delete the log's days older than that. Returns the
    decision.

    A retrain is asked for on drift or decay, unless a CT run of the view is in flight
    (the orchestrator tells) or the last drift-triggered retrain is inside the cooldown.
    A challenger on trial is promoted or dropped when the live gate can tell
    (`monitoring.livegate`); `on_promoted(version)` then tells serving.
    """
    result, evidence = check_with_evidence(view, store, registry, since, until)
    gate = livegate.decide(view, store, registry, result.window_end)
    if gate is not None:
        decided = gate.outcome != livegate.CONTINUE
        found = Finding("live_gate", f"v{gate.challenger}", gate.outcome, gate.low, gate.high,
                        decided)  # fmt: skip
        result.findings.append(found)
    now = utc_now()
    blocked = None
    if result.retrain:
        blocked = (
            "a CT run is already in flight" if ct_in_flight else cooldown_blocks(store, view, now)
        )
        if blocked is None and gate is not None and gate.outcome == livegate.CONTINUE:
            blocked = trial_blocks(registry, view)
    trigger = result.retrain and blocked is None
    DriftReports(store).record(result, triggered=trigger if result.retrain else None)
    if result.onset is not None and result.onset_found is not None:
        # every later run learns from the new concept
        registry.record_change_onset(view.name, result.onset, result.onset_found)
    report_run = None
    if report_to_mlflow and result.status not in (NOT_ENOUGH, NO_CHAMPION):
        report_run = log_to_mlflow(registry, result, evidence)
    line = result.summary() + (f"; retrain NOT triggered: {blocked}" if blocked else "")
    line += "; retrain triggered" if trigger else ""
    if gate is not None:
        line += f"; live trial of v{gate.challenger}: {gate.outcome} ({gate.reason})"
        if livegate.apply(registry, gate) and gate.outcome == livegate.PROMOTED and on_promoted:
            on_promoted(gate.challenger)
    pruned = None
    if keep_days is not None:
        pruned, note = _prune(view, store, keep_days, min(result.window_end, now))
        line += f"; {note}"
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
        "pruned_rows": None if pruned is None else pruned.deleted,
        "live_gate": None
        if gate is None
        else {
            "challenger": gate.challenger,
            "outcome": gate.outcome,
            "reason": gate.reason,
            "pairs": gate.pairs,
            "low": gate.low,
            "high": gate.high,
        },
        "conf": {
            "trigger": "drift",
            "reason": reason,
            "check_id": result.check_id,
            "onset": result.onset,
            "findings": json.loads(findings_json(result)),
        },
        "result": result.to_dict(),
    }
