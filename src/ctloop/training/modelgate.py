"""Step 4 (gate 2): bless the candidate or not.

`decide` is the gate itself, a pure function of the view, the validation labels and the
scores (testable without MLflow or a database); `evaluate` scores the candidate and the
champion on the run's newest days, calls it, and records the verdict on the version.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ctloop.core import metrics
from ctloop.core.predictor import Predictor
from ctloop.features.view import FeatureView
from ctloop.registry import FAILED_CHECKS_TAG, VersionInfo
from ctloop.training.datagate import GateReport, split_days
from ctloop.training.run import ModelGateError, Run
from ctloop.training.trainset import load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """One model's metrics on the validation rows, and which version it is."""

    version: VersionInfo
    metrics: dict[str, float]


def _metric(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise ModelGateError(f"metric '{name}' could not be computed on the validation days")
    return metrics[name]


def _labels_vs_champion(
    view: FeatureView,
    trigger: str,
    champion: VersionInfo,
    scores: dict[str, float],
    summary: dict[str, Any],
) -> tuple[bool, str, float | None, float]:
    """Do this run's labels still agree with the champion as well as its own validation did?

    The candidate-vs-champion comparison cannot see corrupted labels: on flipped labels
    (Good <-> Poor) the candidate learns the flip, scores as well as the champion did, and
    the champion scores far worse on the same rows, so the candidate "wins". A champion
    whose primary metric on the new validation labels is worse by more than the monitor's
    decay limit (`drift.max_accuracy_drop`, read as `ctloop.core.metrics` reads tolerances)
    than its recorded validation figure means the labels changed meaning: corruption, or
    concept drift. Concept drift reaches training as a drift-triggered run (the monitor
    measured the decay), which accepts the drop; any other trigger is refused, exactly as
    the data gate treats skew.
    """
    name = view.primary_metric
    rule = metrics.metric(name)
    limit = float(view.drift.max_accuracy_drop or 0)
    recorded = champion.metrics.get(name)
    if recorded is None or name not in scores:
        missing = f"champion v{champion.version} has no recorded {name}: not checked"
        return True, missing, None, limit
    drop = rule.worsening(scores[name], float(recorded))
    detail = (
        f"champion v{champion.version} {name} {scores[name]:.4f} on these validation "
        f"labels vs {float(recorded):.4f} on its own (may worsen by at most "
        f"{rule.tolerance_text(limit)})"
    )
    ok = drop <= limit
    found = summary.get("change_found")
    if not ok and trigger == "drift":
        ok, detail = True, detail + "; accepted: decay measured by the drift monitor"
    elif not ok and found and champion.tags.get("as_of") and champion.tags["as_of"] <= found:
        ok, detail = (
            True,
            detail
            + (
                f"; accepted: the monitor found a change from {summary['change_onset']} after "
                "this champion was trained"
            ),
        )
    elif not ok:
        detail += (
            ": the labels contradict the champion (corrupted labels, or concept drift the "
            "monitor has not measured)"
        )
    return ok, detail, drop, limit


def _freshness(as_of: str, champion: VersionInfo) -> tuple[bool, str]:
    """A candidate of older data never replaces a champion of newer data.

    The comparison below runs on the candidate's validation days; for a backfill (a run
    as of a date before the champion's) those are days the champion trained on, so the
    champion would look worse than it is and be rolled back by a model of the past. The
    later of the two windows decides: such a candidate is registered and refused, and only
    `--force-promote` (recorded on the version) moves the alias.
    """
    theirs = champion.tags.get("as_of")
    if theirs is None or theirs <= as_of:
        return True, f"candidate as of {as_of}, champion v{champion.version} as of {theirs}"
    return False, (
        f"backfill: candidate trained as of {as_of}, champion v{champion.version} as of "
        f"{theirs} on newer data; a model of older data never replaces it "
        "(--force-promote overrides and is recorded)"
    )


def _floor_check(
    view: FeatureView, train_labels: pd.Series, y: pd.Series, cand: float
) -> tuple[bool, str, float]:
    """Gate 2's floor: the view's `min_value`, or, when it sets none, the score of a model
    that learnt only the training labels' distribution on the same validation rows (a
    default floor of 0 would bless a model that learnt nothing)."""
    gate = view.gates.model
    name = view.primary_metric
    rule = metrics.metric(name)
    if gate.min_value is not None:
        floor = float(gate.min_value)
        ok = not rule.better(floor, cand)
        return ok, f"candidate {name} {cand:.4f} vs floor {floor}", floor
    naive = metrics.score(view, y, metrics.naive_output(view, train_labels, len(y)))
    floor = naive.get(name, math.nan)
    if math.isnan(floor):
        return True, f"no naive {name} on these rows: floor not applied", floor
    ok = rule.better(cand, floor)
    what = "the training mean" if view.label.is_regression else "the training class shares"
    detail = f"candidate {name} {cand:.4f} must beat {floor:.4f}, a model that predicts {what}"
    return ok, detail, floor


def decide(
    view: FeatureView,
    trigger: str,
    summary: dict[str, Any],
    train_labels: pd.Series,
    y: pd.Series,
    candidate: Scores,
    champion: Scores | None,
) -> GateReport:
    """Gate 2: blessed when the candidate clears the floor (`_floor_check`) and trails the
    champion by no more than the tolerance on the view's primary metric, and the champion
    still agrees with the labels about as well as it did on its own validation days
    (`_labels_vs_champion`); with no champion only the floor counts."""
    metric = view.primary_metric
    rule = metrics.metric(metric)
    cand = _metric(candidate.metrics, metric)
    report = GateReport("model")
    floor_ok, detail, floor = _floor_check(view, train_labels, y, cand)
    report.add("floor", floor_ok, detail, cand, floor)
    if champion is None:
        report.add("vs_champion", True, "no other champion: only the floor applies")
        return report
    tolerance = float(view.gates.model.max_degradation or 0)
    info = champion.version
    report.add("freshness", *_freshness(summary["as_of"], info))
    champ_value = _metric(champion.metrics, metric)
    change = rule.worsening(cand, champ_value)
    report.add(
        "vs_champion", change <= tolerance,
        f"candidate {metric} {cand:.4f} vs champion v{info.version} {champ_value:.4f} "
        f"(may trail by at most {rule.tolerance_text(tolerance)})",
        change, tolerance,
    )  # fmt: skip
    report.add(
        "labels_vs_champion", *_labels_vs_champion(view, trigger, info, champion.metrics, summary)
    )
    return report


def _record(run: Run, candidate: VersionInfo, report: GateReport, tags: dict[str, str]) -> None:
    """Tag the verdict on the candidate. A version that served once (the `previous` a
    rollback returns to) keeps the verdict it was promoted on; a later re-run that reuses
    it and refuses it records its own verdict beside it."""
    registry = run.registry()
    name = run.view.name
    if (
        not report.passed
        and "promoted_at" in candidate.tags
        and candidate.tags.get("gate.model") == "passed"
    ):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        failed = ",".join(c.name for c in report.failed)
        registry.set_tags(name, candidate.version, {
            f"reevaluated.{stamp}": f"as_of={run.as_of.isoformat()}; gate.model=failed ({failed})"
        })  # fmt: skip
    else:
        registry.set_tags(name, candidate.version, tags)


def evaluate(
    run: Run, version: str, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 4 (gate 2): score candidate and champion on the same newest days, `decide`,
    and tag the decision and every check on the candidate version."""
    trainset = load(run, store_url, expected_fingerprint)
    frame, summary = trainset.frame, trainset.summary
    view = run.view
    registry = run.registry().activate()  # `models:/` URIs resolve in this registry
    is_val = split_days(view, frame).to_numpy()
    valid = frame.loc[is_val]
    y = valid[view.label.name]

    def scores(info: VersionInfo) -> Scores:
        predictor = Predictor.load(view, info.uri, info.version)
        return Scores(info, metrics.score(view, y, predictor.predict(valid)))

    candidate = scores(registry.version(view.name, version))
    champion_info = registry.champion(view.name)
    champion = None
    if champion_info is not None and champion_info.version != candidate.version.version:
        champion = scores(champion_info)
    train_labels = frame.loc[~is_val, view.label.name]
    report = decide(view, run.trigger, summary, train_labels, y, candidate, champion)
    metric = view.primary_metric
    cand = candidate.metrics[metric]
    champ_value = champion.metrics.get(metric) if champion else None
    tags = {"gate.model": "passed" if report.passed else "failed",
            FAILED_CHECKS_TAG: ",".join(c.name for c in report.failed) or "none"}  # fmt: skip
    # always written ("none": no champion), so a re-evaluation never leaves an older
    # verdict's champion behind for promotion's compare-and-swap to trust
    tags["gate.model.champion_version"] = champion_info.version if champion_info else "none"
    if champion is not None and champ_value is not None:
        tags[f"gate.model.champion_{metric}"] = f"{champ_value:.4f}"
    _record(run, candidate.version, report, tags)
    registry.log_gate_report(candidate.version, "model", {
        **report.to_dict(), "metric": metric, "candidate_metric": cand,
        "champion_metric": champ_value, "as_of": run.as_of.isoformat(),
        "champion_version": champion.version.version if champion else None,
    })  # fmt: skip
    log.info(report.summary())
    return {**report.to_dict(), "blessed": report.passed, "version": candidate.version.version,
            "metric": metric, "candidate_metric": cand, "champion_metric": champ_value,
            "champion_version": champion_info.version if champion_info else None}  # fmt: skip
