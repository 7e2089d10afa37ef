"""`run_demo`: the loop, day by day, with real components and a clock that moves a day
per step (history, the first champion, traffic, labels, monitor, retraining, scoring).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ctloop.core.predictor import Predictor
from ctloop.dev.dagrunner import DagRunner, airflow_env
from ctloop.dev.demo.report import day_line, plot, verdict
from ctloop.dev.demo.scoring import daily_accuracy, oracle_accuracy
from ctloop.dev.demo.traffic import request_bodies, send_day, wait_logged, wait_served
from ctloop.dev.demo.world import (
    SOURCE_VIEW,
    DayRecord,
    DemoConfig,
    demo_env,
    prepare_folder,
    write_demo_view,
)
from ctloop.dev.launcher import Server, bentoml_command, every_worker_loaded, free_port
from ctloop.errors import CtloopError
from ctloop.features.view import load_view_file
from ctloop.ingest.synth import Scenario, StreamConfig, generate_day, stream
from ctloop.predlog.store import CHAMPION_ROLE, PredictionLog
from ctloop.registry import Registry
from ctloop.settings import get_settings, project_root
from ctloop.store.features import FeatureStore

Say = Callable[[str], None]
"""Where progress lines go (the CLI prints them on stderr)."""


@contextlib.contextmanager
def _running(items: list[Any]) -> Iterator[None]:
    """Stop (or close) every helper process on the way out, whatever happened."""
    try:
        yield
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.stop() if hasattr(item, "stop") else item.close()


def run_demo(config: DemoConfig, say: Say) -> dict[str, Any]:
    """Run the loop; returns the summary (also written to `<out>/demo_summary.json`)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    root = project_root()
    if root is None:
        raise CtloopError("demo: run it from a checkout of ctloop (it serves serving/ from there)")
    started = time.monotonic()
    out = config.out.resolve()
    prepare_folder(out)
    view_file = write_demo_view(get_settings().features_dir / f"{SOURCE_VIEW}.yaml",
                                out / "features", config.rollout)  # fmt: skip
    view = load_view_file(view_file)
    port = free_port()
    env = demo_env(out, root, port, secrets.token_urlsafe(24), config.workers)
    say(f"demo folder {out} (feature store, MLflow, Airflow metadata, logs)")

    runner = DagRunner(
        root / "dags", out / "airflow", airflow_env(out / "airflow", root / "dags", env)
    )
    service = Server(bentoml_command(port), env, port, out / "serving.log", root,
                     ready=every_worker_loaded(config.workers)).start()  # fmt: skip
    closers: list[Any] = [runner, service]
    store = FeatureStore(env["FEATURE_STORE_URL"])
    artifacts = Path(env["CTLOOP_MLFLOW_ARTIFACT_ROOT"])
    registry = Registry(env["MLFLOW_TRACKING_URI"], artifacts).activate()
    ct_dag, monitor_dag = f"ct_{view.name}", f"monitor_{view.name}"
    day0 = config.start
    drift_start = day0 + dt.timedelta(days=config.drift_day)
    stream_config = StreamConfig(
        seed=config.seed, rows_per_day=config.rows_per_day, label_delay_days=1,
        scenario=Scenario.CONCEPT_DRIFT, drift_start=drift_start,
    )  # fmt: skip
    records: list[DayRecord] = []
    with _running(closers):
        # 1. history: features and the labels that had landed by day 0
        store.init([view])
        history_start = day0 - dt.timedelta(days=config.history_days)
        pending: list[pd.DataFrame] = []
        for _, features, labels in stream(view, history_start, config.history_days, stream_config):
            landed = labels[labels["arrived_at"] < pd.Timestamp(day0)]
            store.ingest(view, features, landed)
            pending.append(labels[labels["arrived_at"] >= pd.Timestamp(day0)])
        say(f"history: {config.history_days} days x {config.rows_per_day} customers from "
            f"{history_start} (labels land a day late)")  # fmt: skip

        # 2. the first champion, through the CT DAG as a manual trigger would start it
        say("airflow: ct DAG, first model (manual trigger) ...")
        first = runner.trigger(ct_dag, {"as_of": day0.isoformat(), "reason": "demo: first model"})
        if first["state"] != "success" or not first["xcom"].get("promote"):
            raise CtloopError(f"the first CT run did not promote:\n{first['log'][-3000:]}")
        v1 = str(first["xcom"]["promote"]["champion"])
        say(f"airflow: ct run {first['state']}: version {v1} is champion")
        info = registry.champion(view.name)
        static_model = Predictor.load(view, info.uri, info.version)
        service.wait_ready()
        say(f"serving: {service.url} ready with version {v1} ({config.workers} workers)")

        # 3. the days
        sent_total = 0
        day_features: dict[str, pd.DataFrame] = {}
        for offset in range(config.days):
            day = day0 + dt.timedelta(days=offset)
            features, labels = generate_day(day, stream_config)
            rec = DayRecord(day.isoformat(), stream_config.drifting(day))
            store.ingest(view, features, None)
            day_features[rec.day] = features
            answers = send_day(service.url, request_bodies(view, features))
            rec.answered = len(answers)
            rec.served_versions = sorted({str(a["model_version"]) for a in answers})
            sent_total += len(answers)
            pending.append(labels)
            waiting = pd.concat(pending, ignore_index=True)
            end_of_day = pd.Timestamp(day + dt.timedelta(days=1))
            landed = waiting[waiting["arrived_at"] < end_of_day]
            pending = [waiting[waiting["arrived_at"] >= end_of_day]]
            rec.labels_landed = store.upsert_labels(view, landed) if len(landed) else 0
            logged = wait_logged(store, view.name, sent_total)
            if logged != sent_total:
                raise CtloopError(f"{sent_total} answers but {logged} prediction log rows")

            checked = runner.trigger(monitor_dag, {})
            decision = checked["xcom"].get("check") or {}
            rec.monitor = str(decision.get("summary", checked["state"]))
            rec.monitor_status = str(decision.get("status", ""))
            gate = decision.get("live_gate") or {}
            if gate and gate.get("outcome") != "continue":
                rec.live_gate = f"v{gate['challenger']} {gate['outcome']} ({gate['reason']})"
                if gate["outcome"] == "promoted":
                    rec.gate_promoted = str(gate["challenger"])
                    for earlier in records:  # the retrain that started the trial
                        if earlier.ct_version == rec.gate_promoted:
                            earlier.ct_promoted = True
                    if not wait_served(service.url, rec.gate_promoted):
                        raise CtloopError(f"serving did not swap to version {rec.gate_promoted}")
            queued = [t for t in checked["triggered"] if t["dag_id"] == ct_dag]
            if queued:
                rec.triggered = True
                conf = {**queued[0]["conf"], "as_of": (day + dt.timedelta(days=1)).isoformat()}
                retrain = runner.trigger(ct_dag, conf)
                runner.retire_queued()
                rec.ct_version = str((retrain["xcom"].get("train") or {}).get("version"))
                promoted = retrain["xcom"].get("promote") or {}
                rec.ct_trial = "challenger" in promoted
                rec.ct_promoted = bool(promoted) and not rec.ct_trial
                if rec.ct_promoted and not wait_served(service.url, rec.ct_version):
                    raise CtloopError(f"serving did not swap to version {rec.ct_version}")
            elif config.rollout == "shadow" and registry.challenger(view.name) is not None:
                rec.scheduled_skipped = "a live trial is running"  # the gate decides first
            else:  # the CT DAG's own timetable: one run per day, as of the next day
                conf = {"as_of": (day + dt.timedelta(days=1)).isoformat(),
                        "trigger": "schedule", "reason": "daily schedule"}  # fmt: skip
                scheduled = runner.trigger(ct_dag, conf)
                if scheduled["state"] != "success":  # a gate's refusal still succeeds
                    tail = scheduled["log"][-3000:]
                    raise CtloopError(
                        f"the scheduled CT run of {day} ended {scheduled['state']}:\n{tail}"
                    )
                rec.scheduled_version = (scheduled["xcom"].get("train") or {}).get("version")
                promoted = scheduled["xcom"].get("promote") or {}
                rec.scheduled_trial = "challenger" in promoted
                rec.scheduled_promoted = bool(promoted) and not rec.scheduled_trial
                version = str(rec.scheduled_version)
                if rec.scheduled_promoted and not wait_served(service.url, version):
                    raise CtloopError(f"serving did not swap to version {version}")
            records.append(rec)
            say(day_line(rec))

        # 4. the last labels land; score every day
        rest = pd.concat(pending, ignore_index=True)
        if len(rest):
            store.upsert_labels(view, rest)
        service.stop()  # SIGTERM: the writers flush before exit
        scores = daily_accuracy(view, store, static_model, day_features)
        oracle = oracle_accuracy(view, store, drift_start, day_features)
        for rec in records:
            rec.served_accuracy, rec.static_accuracy = scores[rec.day]
            rec.oracle_accuracy = oracle.get(rec.day)
        logged = PredictionLog(store).count(view.name, role=CHAMPION_ROLE)

    summary = verdict(config, records, sent_total, logged, v1)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    plot(records, drift_start.isoformat(), out / "demo_accuracy.png")
    summary["plot"] = str(out / "demo_accuracy.png")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    store.dispose()
    return summary
