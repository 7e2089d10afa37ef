"""The continuous-training pipeline as plain steps: extract, data gate, train, model gate,
infra check, promote. The CLI (`ctloop train`) and the Airflow DAG call these same
functions; each takes plain values and returns a JSON-able dict, so a step can run in any
worker. Data travels through the feature store (each step re-reads the same point-in-time
set and checks its fingerprint), artifacts through MLflow: no shared filesystem assumed.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import logging
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ctloop.core import metrics
from ctloop.core.predictor import Predictor, answer_problems, kind_problems
from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView, load_view
from ctloop.registry import Registry, VersionInfo, untrusted_reason
from ctloop.settings import Settings, get_settings, project_root
from ctloop.store.features import FeatureStore, to_date
from ctloop.training.datagate import (
    DataGateError,
    GateReport,
    check_data,
    split_days,
    validation_start,
)
from ctloop.training.fit import REFERENCE_ARTIFACT

log = logging.getLogger(__name__)

TRIGGERS = ("schedule", "new-data", "manual", "drift")


class ModelGateError(CtloopError):
    """The candidate was not blessed; it stays registered but never becomes champion."""


class InfraCheckError(CtloopError):
    """The candidate failed to load or answer as served."""


class DataChangedError(CtloopError):
    """The training window's data changed between steps of one run."""


@dataclass(frozen=True)
class Run:
    """Who and what one pipeline run is about; every step receives it."""

    view: FeatureView
    as_of: dt.date
    trigger: str = "manual"
    reason: str = ""
    airflow_run_id: str = ""
    settings: Settings | None = None
    expected_drift: frozenset[str] = frozenset()  # features the monitor found drifted

    @classmethod
    def make(
        cls,
        view: str,
        as_of: str | dt.date | None = None,
        trigger: str = "manual",
        reason: str = "",
        airflow_run_id: str = "",
        expected_drift: Iterable[str] = (),
    ) -> Run:
        if trigger not in TRIGGERS:
            raise CtloopError(f"trigger must be one of {', '.join(TRIGGERS)}, got '{trigger}'")
        day = to_date(as_of) if as_of else dt.datetime.now(dt.UTC).date()
        fv = load_view(view)
        drifted = frozenset(expected_drift)
        unknown = drifted - set(fv.feature_names)
        if unknown:
            raise CtloopError(
                f"drifted features not in view {fv.name}: {', '.join(sorted(unknown))}"
            )
        return cls(fv, day, trigger, reason, airflow_run_id, get_settings(), drifted)

    @property
    def window_days(self) -> int:
        """The training window: the view's, or its shorter drift window on drift runs."""
        training = self.view.training
        if self.trigger == "drift" and training.drift_window_days:
            return training.drift_window_days
        return training.window_days

    @property
    def cfg(self) -> Settings:
        return self.settings or get_settings()

    def store(self, url: str | None = None) -> FeatureStore:
        if url:
            return FeatureStore(
                url, chunk_rows=self.cfg.extract_chunk_rows, batch_rows=self.cfg.write_batch_rows
            )
        return FeatureStore.from_settings(self.cfg)

    def registry(self) -> Registry:
        return Registry.from_settings(self.cfg)


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a training set: same rows and values, same fingerprint."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def git_commit() -> str:
    """The code version for lineage: $CTLOOP_GIT_COMMIT, else the checkout's HEAD."""
    if os.environ.get("CTLOOP_GIT_COMMIT"):
        return os.environ["CTLOOP_GIT_COMMIT"]
    root = project_root()
    if root is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


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


def _load(run: Run, store_url: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
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
    return frame, summary


def _same_data(summary: dict[str, Any], expected: str | None) -> None:
    if expected and summary["fingerprint"] != expected:
        raise DataChangedError(
            f"the training data for {summary['view']} as of {summary['as_of']} changed during "
            f"this run (fingerprint {expected} -> {summary['fingerprint']}); retry the run"
        )


def extract(run: Run, store_url: str | None = None) -> dict[str, Any]:
    """Step 1: read the point-in-time training set and describe it (rows, window, hash)."""
    _, summary = _load(run, store_url)
    log.info("extracted %s", json.dumps(summary))
    return summary


def _champion_reference(registry: Registry, name: str) -> tuple[VersionInfo | None, dict | None]:
    import mlflow.artifacts

    champion = registry.champion(name)
    if champion is None or champion.run_id is None:
        return champion, None
    uri = f"runs:/{champion.run_id}/{REFERENCE_ARTIFACT}"
    return champion, mlflow.artifacts.load_dict(uri)


def validate_data(
    run: Run, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 2 (gate 1): check the training set; raises DataGateError naming every failure."""
    import mlflow

    frame, summary = _load(run, store_url)
    _same_data(summary, expected_fingerprint)
    registry = run.registry()
    mlflow.set_tracking_uri(registry.tracking_uri)
    champion, reference = _champion_reference(registry, run.view.name)
    waiting = 0
    if len(frame) < run.view.gates.data.min_rows:
        store = run.store(store_url)
        try:
            waiting = store.waiting_labels(run.view, run.as_of, run.window_days)
        finally:
            store.dispose()
    report = check_data(
        run.view, frame, pd.Timestamp(run.as_of), reference, run.expected_drift, waiting
    )
    log.info(report.summary())
    if not report.passed:
        raise DataGateError(report)
    return {**report.to_dict(), "champion": champion.version if champion else None}


def record_reuse(run: Run, registry: Registry, version: VersionInfo) -> str:
    """Leave this run's trigger and reason on a version it reuses (and on its MLflow run),
    so a reason typed in the Trigger form is never lost because no new model was needed."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    trace = (f"trigger={run.trigger}; run={run.airflow_run_id or 'cli'}; "
             f"as_of={run.as_of.isoformat()}; reason={run.reason[:300]}")  # fmt: skip
    registry.set_tags(run.view.name, version.version, {f"reused.{stamp}": trace})
    if version.run_id:
        registry.client.set_tag(version.run_id, f"ctloop.reused.{stamp}", trace)
    return trace


def train(
    run: Run, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 3: train, log everything to MLflow and register a candidate version.

    A version already trained on the same data as of the same date is reused instead of
    registering a duplicate, so re-running a date is safe.
    """
    import mlflow
    import mlflow.catboost

    from ctloop.training import fit as training

    frame, summary = _load(run, store_url)
    _same_data(summary, expected_fingerprint)
    registry = run.registry()
    name = run.view.name
    existing = registry.find(name, data_fingerprint=summary["fingerprint"], as_of=summary["as_of"])
    if existing:
        version = existing[-1]
        log.info(
            "version %s of %s was already trained on this data; reusing it", version.version, name
        )
        record_reuse(run, registry, version)
        return {**summary, "version": version.version, "run_id": version.run_id, "reused": True}

    weigh_before = (
        pd.Timestamp(summary["change_onset"]) if summary.get("pre_change") == "weighted" else None
    )
    result = training.fit(run.view, frame, pd.Timestamp(run.as_of), weigh_before=weigh_before)
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    experiment_id = registry.experiment_id(name)
    tags = {
        "trigger": run.trigger,
        "reason": run.reason[:500],
        "as_of": summary["as_of"],
        "window": f"{summary['window_start']}..{summary['window_end']}",
        "train_rows": summary["train_rows"],
        "validation_rows": summary["validation_rows"],
        "data_fingerprint": summary["fingerprint"],
        "git_commit": git_commit(),
        "airflow_run_id": run.airflow_run_id or "none",
        "gate.data": "passed",
    }
    if summary.get("pre_change"):
        tags["change_onset"] = f"{summary['change_onset']} ({summary['pre_change']} before)"
    run_name = f"{name}-{summary['as_of']}-{run.trigger}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as active:
        mlflow.set_tags({f"ctloop.{k}": v for k, v in tags.items()})
        mlflow.log_params({k: v for k, v in result.params.items() if k != "class_names"})
        mlflow.log_params(
            {"window_days": run.window_days,
             "validation_days": run.view.training.validation_days}
        )  # fmt: skip
        mlflow.log_metrics({f"val_{k}": v for k, v in result.metrics.items()})
        from ctloop.core.predictor import to_model_frame

        features = to_model_frame(run.view, frame)
        is_val = split_days(run.view, frame).to_numpy()
        for context, mask in (("training", ~is_val), ("validation", is_val)):
            part = frame.loc[mask, [*run.view.feature_names, run.view.label.name]]
            dataset = mlflow.data.from_pandas(
                part, name=f"{name}_{context}_{summary['as_of']}", targets=run.view.label.name
            )
            mlflow.log_input(dataset, context=context)
        mlflow.log_dict(result.reference, training.REFERENCE_ARTIFACT)
        mlflow.log_dict(summary, "data/summary.json")
        figures = training.evaluation_figures(
            run.view, result.validation[run.view.label.name], result.output
        )
        figures["plots/feature_importance.png"] = training.importance_figure(run.view, result.model)
        for artifact, figure in figures.items():
            mlflow.log_figure(figure, artifact)
        example = features.head(5)
        info = mlflow.catboost.log_model(
            result.model,
            name="model",
            registered_model_name=name,
            signature=model_signature(run.view, result.model, example),
            input_example=example,
            # the environment is pinned by uv.lock; inferring requirements costs ~20 s a model
            pip_requirements=mlflow.catboost.get_default_pip_requirements(),
        )
        version = str(info.registered_model_version)
        run_id = active.info.run_id
    registry.set_tags(name, version, tags)
    registry.set_tags(name, version, {f"metric.{k}": f"{v:.4f}" for k, v in result.metrics.items()})
    log.info("registered %s version %s from run %s", name, version, run_id)
    return {**summary, "version": version, "run_id": run_id, "reused": False,
            "metrics": result.metrics}  # fmt: skip


def model_signature(view: FeatureView, model: Any, example: pd.DataFrame) -> Any:
    """The MLflow signature from the view, not inferred from five rows: nullable features
    are optional inputs, numbers are doubles, categories strings; the output is one
    probability per class (classification) or the value (regression)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema([
        ColSpec(DataType.double if f.is_numeric else DataType.string, f.name,
                required=not f.nullable)
        for f in view.features
    ])  # fmt: skip
    answer = model.predict(example) if view.label.is_regression else model.predict_proba(example)
    outputs = infer_signature(example, answer).outputs
    return ModelSignature(inputs=inputs, outputs=outputs)


def _metric(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise ModelGateError(f"metric '{name}' could not be computed on the validation days")
    return metrics[name]


def _labels_vs_champion(
    run: Run, champion: VersionInfo, scores: dict[str, float], summary: dict[str, Any]
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
    name = run.view.primary_metric
    rule = metrics.metric(name)
    limit = float(run.view.drift.max_accuracy_drop or 0)
    recorded = champion.tags.get(f"metric.{name}")
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
    if not ok and run.trigger == "drift":
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
    run: Run, train_labels: pd.Series, y: pd.Series, cand: float
) -> tuple[bool, str, float]:
    """Gate 2's floor: the view's `min_value`, or, when it sets none, the score of a model
    that learnt only the training labels' distribution on the same validation rows (a
    default floor of 0 would bless a model that learnt nothing)."""
    view, gate = run.view, run.view.gates.model
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


def evaluate(
    run: Run, version: str, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 4 (gate 2): score candidate and champion on the same newest days; bless or not.

    Blessed when the candidate clears the floor (`_floor_check`) and trails the champion
    by no more than the tolerance on the view's primary metric, and the champion still
    agrees with the labels about as well as it did on its own validation days
    (`_labels_vs_champion`); with no champion only the floor counts. The decision and
    every check are tagged on the candidate version.
    """
    frame, summary = _load(run, store_url)
    _same_data(summary, expected_fingerprint)
    registry = run.registry()
    name, gate = run.view.name, run.view.gates.model
    is_val = split_days(run.view, frame).to_numpy()
    valid = frame.loc[is_val]
    candidate = registry.version(name, version)
    champion = registry.champion(name)
    y = valid[run.view.label.name]

    def score(info: VersionInfo) -> dict[str, float]:
        predictor = Predictor.load(run.view, info.uri, info.version)
        return metrics.score(run.view, y, predictor.predict(valid))

    metric = run.view.primary_metric
    rule = metrics.metric(metric)
    cand_scores = score(candidate)
    cand = _metric(cand_scores, metric)
    report = GateReport("model")
    floor_ok, detail, floor = _floor_check(run, frame.loc[~is_val, run.view.label.name], y, cand)
    report.add("floor", floor_ok, detail, cand, floor)
    champ_value = None
    tolerance = float(gate.max_degradation or 0)
    if champion is not None and champion.version != candidate.version:
        report.add("freshness", *_freshness(summary["as_of"], champion))
        champ_scores = score(champion)
        champ_value = _metric(champ_scores, metric)
        change = rule.worsening(cand, champ_value)
        report.add(
            "vs_champion", change <= tolerance,
            f"candidate {metric} {cand:.4f} vs champion v{champion.version} {champ_value:.4f} "
            f"(may trail by at most {rule.tolerance_text(tolerance)})",
            change, tolerance,
        )  # fmt: skip
        report.add("labels_vs_champion", *_labels_vs_champion(run, champion, champ_scores, summary))
    else:
        report.add("vs_champion", True, "no other champion: only the floor applies")
    blessed = report.passed
    tags = {"gate.model": "passed" if blessed else "failed", f"gate.model.{metric}": f"{cand:.4f}"}
    for check in report.checks:
        tags[f"gate.model.{check.name}"] = "passed" if check.passed else "failed"
    if champ_value is not None:
        tags["gate.model.champion_version"] = champion.version
        tags[f"gate.model.champion_{metric}"] = f"{champ_value:.4f}"
    if (
        not blessed
        and "promoted_at" in candidate.tags
        and candidate.tags.get("gate.model") == ("passed")
    ):
        # a version that served once (the `previous` a rollback returns to) keeps the
        # verdict it was promoted on; a later re-run that reuses it records its own
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        failed = ",".join(c.name for c in report.failed)
        registry.set_tags(name, candidate.version, {
            f"reevaluated.{stamp}": f"as_of={summary['as_of']}; gate.model=failed ({failed})"
        })  # fmt: skip
    else:
        registry.set_tags(name, candidate.version, tags)
    log.info(report.summary())
    return {**report.to_dict(), "blessed": blessed, "version": candidate.version,
            "metric": metric, "candidate_metric": cand, "champion_metric": champ_value,
            "champion_version": champion.version if champion else None}  # fmt: skip


def infra_check(
    run: Run, version: str, store_url: str | None = None, sample_rows: int = 64
) -> dict[str, Any]:
    """Step 5 (gate 3): load the candidate as serving does and answer sample rows."""
    registry = run.registry()
    name = run.view.name
    info = registry.version(name, version)
    try:
        start = time.perf_counter()
        predictor = Predictor.load(run.view, info.uri, info.version)
        load_s = time.perf_counter() - start
        store = run.store(store_url)
        try:
            # the newest rows of the run's own window: what the model will meet first
            first_day = run.as_of - dt.timedelta(days=run.window_days)
            sample = store.latest_features(run.view, run.as_of, sample_rows, since=first_day)
        finally:
            store.dispose()
        if sample.empty:
            raise InfraCheckError(
                f"no feature rows in the window [{first_day}, {run.as_of}) to query the model with"
            )
        problems = kind_problems(run.view, predictor)
        if problems:
            raise InfraCheckError("; ".join(problems))
        start = time.perf_counter()
        output = predictor.predict(sample)
        predict_ms = (time.perf_counter() - start) * 1000
        problems = answer_problems(run.view, output, len(sample))
        if problems:
            raise InfraCheckError("; ".join(problems))
    except InfraCheckError as exc:
        registry.set_tags(
            name, version, {"gate.infra": "failed", "gate.infra.reason": str(exc)[:400]}
        )
        raise
    except Exception as exc:  # any failure to load or predict is the finding itself
        registry.set_tags(
            name, version, {"gate.infra": "failed", "gate.infra.reason": repr(exc)[:400]}
        )
        raise InfraCheckError(f"version {version} failed to load or predict: {exc!r}") from exc
    registry.set_tags(name, version, {"gate.infra": "passed"})
    result = {"version": version, "load_seconds": round(load_s, 3),
              "predict_ms": round(predict_ms, 2), "rows": len(sample)}  # fmt: skip
    log.info("infra check passed: %s", result)
    return result


def notify_serving(cfg: Settings, view: str, version: str) -> str:
    """Tell the serving process to reload now; serving also polls, so failure is not fatal."""
    if not cfg.serving_url:
        return "no serving URL configured (CTLOOP_SERVING_URL); serving will poll the registry"
    url = cfg.serving_url.rstrip("/") + "/admin/reload"
    body = json.dumps({"view": view, "version": version}).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    if cfg.admin_token:
        request.add_header("Authorization", f"Bearer {cfg.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"serving answered {response.status}"
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        log.warning("could not reach serving at %s: %s (it will poll the registry)", url, exc)
        return f"serving not reached: {exc}"


def promote(run: Run, version: str, force: bool = False) -> dict[str, Any]:
    """Step 6: move `champion` to the version (old champion -> `previous`), tell serving.

    Refuses a version whose gates did not pass, unless forced. A forced promotion writes
    who (`forced_by`: the Airflow run, else `cli:<user>`) and why (`forced_reason`: the
    run's reason) on the version *before* the alias moves, because serving refuses a
    champion that has neither passed its gates nor carries that record
    (`registry.untrusted_reason`).
    """
    registry = run.registry()
    name = run.view.name
    info = registry.version(name, version)
    problem = untrusted_reason(info)
    if problem is not None and not force:
        raise ModelGateError(
            f"{name} version {version} cannot be promoted: {problem} "
            "(use --force with --reason to override)"
        )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    who = run.airflow_run_id or f"cli:{getpass.getuser()}"
    if force:
        reason = run.reason or "forced without a reason"
        registry.set_tags(name, version, {"forced": "true", "forced_by": who, "forced_at": now,
                                          "forced_reason": reason[:500]})  # fmt: skip
    new, old = registry.promote(name, version)
    registry.set_tags(name, version, {"promoted_at": now, "promoted_by": who})
    serving = notify_serving(run.cfg, name, new.version)
    return {"champion": new.version, "previous": old.version if old else None,
            "forced": force, "serving": serving}  # fmt: skip


def run_all(run: Run, store_url: str | None = None, force_promote: bool = False) -> dict[str, Any]:
    """All steps in order, as the DAG runs them; stops at the first gate that refuses."""
    summary = extract(run, store_url)
    fp = summary["fingerprint"]
    out: dict[str, Any] = {"extract": summary}
    out["data_gate"] = validate_data(run, store_url, fp)
    trained = train(run, store_url, fp)
    out["train"] = trained
    verdict = evaluate(run, trained["version"], store_url, fp)
    out["model_gate"] = verdict
    if not verdict["blessed"] and not force_promote:
        out["promoted"] = False
        return out
    out["infra_check"] = infra_check(run, trained["version"], store_url)
    out["promote"] = promote(
        run, trained["version"], force=force_promote and not verdict["blessed"]
    )
    out["promoted"] = True
    return out
