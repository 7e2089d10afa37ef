"""`make demo`: the whole loop on the embedded default, with real components, in minutes.

What runs is what production runs, only with a clock that moves a day per step:

* the feature store is an embedded SQLite file and MLflow a local SQLite store, both under
  the demo folder (nothing to install or configure);
* Airflow runs the repository's real DAGs (`ct_<view>`, `monitor_<view>`) through
  `dag.test()` in one child process (`ctloop.dev.dagrunner`), with SQLite metadata;
* the BentoML service runs as `bentoml serve` with two workers, loads the champion from
  the registry, logs every answer to the feature store and hot-swaps on promotion (the CT
  DAG's promote step calls its admin endpoint);
* simulated days of customers are sent through the HTTP endpoint; a concept drift (the
  hidden scoring rule changes) starts part-way; labels land a day after their features;
  the monitor DAG runs after every day and, on drift or decay, the CT DAG run it queued is
  executed with the monitor's conf.

The demo view is a copy of the real one with a short window, one day of label delay, no
cooldown and fewer boosting rounds, so each CT run takes seconds. At the end it prints a
day-by-day timeline and draws live accuracy per day of the served (continuously trained)
model against the first champion scored on the same customers (never retrained). It
fails (non-zero exit) unless the loop closed: drift found, a drift-triggered model
promoted and served, every answer logged, and live accuracy recovered past the static
model's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ctloop.errors import CtloopError
from ctloop.predlog.store import PredictionLog

Say = Callable[[str], None]

MARKER = ".ctloop-demo"
SOURCE_VIEW = "credit_score"

# The demo copy of the view: a short window, labels a day late, no cooldown, small models.
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "training": {"window_days": 14, "drift_window_days": 3, "validation_days": 1,
                 "label_delay_days": 1, "iterations": 150, "early_stopping_rounds": 20},
    "gates.data": {"min_rows": 1000, "min_validation_rows": 300},
    "drift": {"min_rows": 400, "min_labelled_rows": 300, "accuracy_window_days": 14,
              "cooldown_hours": 0},
}  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    """The simulated world: how much history, how many days of traffic, when drift starts."""

    out: Path
    start: dt.date = dt.date(2026, 3, 1)
    history_days: int = 14
    days: int = 12
    drift_day: int = 3
    rows_per_day: int = 800
    seed: int = 2026
    workers: int = 2
    min_recovery: float = 0.05
    oracle_tolerance: float = 0.02

    def __post_init__(self) -> None:
        if self.days < 4 or not 1 <= self.drift_day < self.days - 2:
            raise CtloopError("demo: need days >= 4 and 1 <= drift_day < days - 2")
        if self.rows_per_day < 500:
            raise CtloopError("demo: rows_per_day must be at least 500 (the monitor's minimum)")


@dataclass
class DayRecord:
    """What happened on one simulated day."""

    day: str
    drifting: bool
    answered: int = 0
    served_versions: list[str] = field(default_factory=list)
    labels_landed: int = 0
    monitor: str = ""
    monitor_status: str = ""
    triggered: bool = False
    ct_version: str | None = None
    ct_promoted: bool = False
    scheduled_version: str | None = None
    scheduled_promoted: bool = False
    served_accuracy: float | None = None
    static_accuracy: float | None = None
    oracle_accuracy: float | None = None


# ---------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`bentoml serve` in its own process group, stopped with SIGTERM (flushes the log)."""

    def __init__(self, root: Path, env: dict[str, str], log_path: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "serving.service:ModelService",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, workers: int, timeout: float = 240) -> None:
        """Until every worker serves a model: /readyz answers for one worker only, so the
        per-worker `ctloop_model_version` samples on /metrics are counted too."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CtloopError(f"bentoml serve exited; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    metrics = httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines()
                    loaded = [m for m in metrics if m.startswith("ctloop_model_version{")]
                    if len(loaded) >= workers:
                        return
            time.sleep(1)
        raise CtloopError(f"the service was not ready after {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


# ---------------------------------------------------------------------------- set-up


def prepare_folder(out: Path) -> None:
    """A fresh demo folder; refuses to wipe a folder the demo did not make."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise CtloopError(f"demo: {out} exists and was not made by the demo; pick --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `ctloop demo`; deleted by the next demo run\n")


def write_demo_view(source: Path, target_dir: Path) -> Path:
    """Copy the view file with the demo's overrides; the copy is what every process loads."""
    data = yaml.safe_load(source.read_text())
    for path, values in DEMO_OVERRIDES.items():
        node = data
        for key in path.split("."):
            node = node.setdefault(key, {})
        node.update(values)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def demo_env(out: Path, root: Path, port: int, token: str, workers: int) -> dict[str, str]:
    """One environment for every child: embedded stores under `out`, serving on `port`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_")) and k != "FEATURE_STORE_URL"
    }
    env.update(
        {
            "CTLOOP_DATA_DIR": str(out),
            "CTLOOP_FEATURES_DIR": str(out / "features"),
            "FEATURE_STORE_URL": f"sqlite:///{out / 'feature_store.db'}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
            "CTLOOP_MLFLOW_ARTIFACT_ROOT": str(out / "mlartifacts"),
            "CTLOOP_SERVING_URL": f"http://127.0.0.1:{port}",
            "CTLOOP_ADMIN_TOKEN": token,
            "CTLOOP_SERVING_WORKERS": str(workers),
            "CTLOOP_SERVING_POLL_SECONDS": "5",
            "CTLOOP_SERVING_LOG_FLUSH_SECONDS": "0.5",
            "BENTOML_HOME": str(out / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# ---------------------------------------------------------------------------- traffic


def request_bodies(view: Any, features: pd.DataFrame) -> list[dict[str, Any]]:
    """A day's customers as request bodies: entity, event date and features, nulls as null."""
    frame = features[[view.entity, view.event_date, *view.feature_names]].copy()
    frame[view.event_date] = pd.to_datetime(frame[view.event_date]).dt.strftime("%Y-%m-%d")
    return json.loads(frame.to_json(orient="records"))


def send_day(url: str, bodies: list[dict[str, Any]], batch: int = 100) -> list[dict[str, Any]]:
    """Send a day's records: the first few one by one, the rest in batches. Raises on any
    non-200 answer (the demo's traffic is valid; a refusal would be a bug)."""
    import httpx

    answers: list[dict[str, Any]] = []
    with httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        singles = bodies[:20]
        for body in singles:
            r = http.post(f"{url}/predict", json=body)
            if r.status_code != 200:
                raise CtloopError(f"/predict answered {r.status_code}: {r.text[:300]}")
            answers.append(r.json())
        rest = bodies[len(singles) :]
        for i in range(0, len(rest), batch):
            r = http.post(f"{url}/predict_batch", json={"records": rest[i : i + batch]})
            if r.status_code != 200:
                raise CtloopError(f"/predict_batch answered {r.status_code}: {r.text[:300]}")
            body = r.json()
            answers += [{**p, "model_version": body["model_version"]} for p in body["predictions"]]
    return answers


def wait_logged(store: Any, view: str, expected: int, timeout: float = 60) -> int:
    """Wait until the prediction log holds `expected` rows (the writer flushes every 0.5 s)."""
    deadline = time.monotonic() + timeout
    predictions = PredictionLog(store)
    count = predictions.count(view)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = predictions.count(view)
    return count


def wait_served(url: str, version: str, timeout: float = 60) -> bool:
    """Wait until 10 answers in a row (spread over the workers) come from `version`."""
    import httpx

    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and streak < 10:
        with contextlib.suppress(httpx.HTTPError):
            meta = httpx.get(f"{url}/metadata", timeout=5).json()
            streak = streak + 1 if meta.get("version") == version else 0
        time.sleep(0.1)
    return streak >= 10


# ---------------------------------------------------------------------------- scoring


def daily_accuracy(
    view: Any, store: Any, first_champion: Any, days: dict[str, pd.DataFrame]
) -> dict[str, tuple[float | None, float | None]]:
    """Per day: accuracy of what was served (prediction log joined to landed labels) and of
    the first champion on the same customers."""
    logs = PredictionLog(store).read(
        view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1)
    )  # fmt: skip
    first = min(days)
    last = max(days)
    labels = store.labels_for_days(
        view, dt.date.fromisoformat(first), dt.date.fromisoformat(last), dt.datetime(2100, 1, 1)
    )
    labels = labels.assign(
        _day=pd.to_datetime(labels[view.event_date]).dt.strftime("%Y-%m-%d"),
        _entity=labels[view.entity].astype(str),
    )[["_day", "_entity", view.label.name]]
    served = logs.assign(
        _day=pd.to_datetime(logs[view.event_date]).dt.strftime("%Y-%m-%d"),
        _entity=logs["entity_id"].astype(str),
    ).merge(labels, on=["_day", "_entity"])
    served_acc = (
        (served["prediction"] == served[view.label.name]).groupby(served["_day"]).mean().to_dict()
    )
    out: dict[str, tuple[float | None, float | None]] = {}
    for day, features in days.items():
        truth = features[[view.entity]].astype(str).rename(columns={view.entity: "_entity"})
        truth = truth.assign(_day=day).merge(labels, on=["_day", "_entity"], how="left")
        classes = first_champion.predict(features).predictions
        known = truth[view.label.name].notna().to_numpy()
        static = (
            float((pd.Series(classes)[known].to_numpy() == truth[view.label.name][known]).mean())
            if known.any()
            else None
        )
        out[day] = (served_acc.get(day), static)
    return out


def oracle_accuracy(
    view: Any, store: Any, change: dt.date, days: dict[str, pd.DataFrame]
) -> dict[str, float]:
    """Per day after the change: the accuracy of a model retrained that morning on every
    labelled row since the (true) change that had landed by then, with the view's CatBoost
    parameters. No retraining policy can know more at that moment: the line the served
    model is measured against."""
    from ctloop.core.predictor import Predictor, to_model_frame
    from ctloop.training import fit as training

    labels = store.labels_for_days(view, change, max(dt.date.fromisoformat(d) for d in days),
                                   dt.datetime(2100, 1, 1))  # fmt: skip
    truth = labels.assign(_day=pd.to_datetime(labels[view.event_date]).dt.strftime("%Y-%m-%d"))
    out: dict[str, float] = {}
    params = training.catboost_params(view)
    params.pop("early_stopping_rounds", None)
    for day, features in days.items():
        as_of = dt.date.fromisoformat(day)
        if as_of <= change:
            continue
        rows = store.training_set(view, as_of, (as_of - change).days)
        if len(rows) < 100 or rows[view.label.name].nunique() < len(view.label.class_list):
            continue
        model = training.new_model(view, params)
        model.fit(to_model_frame(view, rows), training.labels_of(view, rows))
        answered = Predictor(view, model, "oracle", "").predict(features).predictions
        known = features[[view.entity]].astype(str).assign(_answer=answered, _day=day).merge(
            truth.assign(**{view.entity: truth[view.entity].astype(str)}),
            on=[view.entity, "_day"],
        )  # fmt: skip
        if len(known):
            out[day] = float((known["_answer"] == known[view.label.name]).mean())
    return out


def plot(records: list[DayRecord], drift_day: str, path: Path) -> None:
    """Live accuracy per day: continuously trained vs never retrained."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(records)))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    served = [r.served_accuracy for r in records]
    static = [r.static_accuracy for r in records]
    ax.plot(x, served, "o-", color="tab:blue", label="served (continuously trained)")
    ax.plot(x, static, "s--", color="tab:gray", label="first champion, never retrained")
    oracle = [r.oracle_accuracy for r in records]
    ax.plot(x, oracle, "^:", color="tab:orange",
            label="oracle: retrained daily on every label since the change")  # fmt: skip
    onset = next((i for i, r in enumerate(records) if r.day == drift_day), None)
    if onset is not None:
        ax.axvline(onset - 0.5, color="tab:red", linestyle=":", label="concept drift starts")
    for i, r in enumerate(records):
        if r.ct_promoted or r.scheduled_promoted:  # promoted end of day i: serves from i + 1
            version = r.ct_version if r.ct_promoted else r.scheduled_version
            how = "drift" if r.ct_promoted else "schedule"
            ax.axvline(i + 0.5, color="tab:green", alpha=0.4)
            ax.annotate(f"v{version} ({how})", (i + 0.5, 0.05), rotation=90,
                        color="tab:green", ha="right", va="bottom")  # fmt: skip
    ax.set_xticks(x, [r.day[5:] for r in records], rotation=45)
    ax.set_xlabel("day")
    ax.set_ylabel("live accuracy (labels joined to logged predictions)")
    ax.set_title("ctloop demo: the loop closes")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- the demo


@contextlib.contextmanager
def _running(items: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.stop() if hasattr(item, "stop") else item.close()


def run_demo(config: DemoConfig, say: Say) -> dict[str, Any]:
    """Run the loop; returns the summary (also written to `<out>/demo_summary.json`)."""
    import logging

    from ctloop.core.predictor import Predictor
    from ctloop.dev.dagrunner import DagRunner, airflow_env
    from ctloop.features.view import load_view_file
    from ctloop.ingest.synth import Scenario, StreamConfig, generate_day, stream
    from ctloop.registry import Registry
    from ctloop.settings import get_settings, project_root
    from ctloop.store.features import FeatureStore

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    root = project_root()
    if root is None:
        raise CtloopError("demo: run it from a checkout of ctloop (it serves serving/ from there)")
    started = time.monotonic()
    out = config.out.resolve()
    prepare_folder(out)
    view_file = write_demo_view(get_settings().features_dir / f"{SOURCE_VIEW}.yaml",
                                out / "features")  # fmt: skip
    view = load_view_file(view_file)
    port = _free_port()
    env = demo_env(out, root, port, secrets.token_urlsafe(24), config.workers)
    say(f"demo folder {out} (feature store, MLflow, Airflow metadata, logs)")

    runner = DagRunner(
        root / "dags", out / "airflow", airflow_env(out / "airflow", root / "dags", env)
    )
    service = Service(root, env, out / "serving.log", port)
    closers: list[Any] = [runner, service]
    store = FeatureStore(env["FEATURE_STORE_URL"])
    registry = Registry(env["MLFLOW_TRACKING_URI"], Path(env["CTLOOP_MLFLOW_ARTIFACT_ROOT"]))
    import mlflow

    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
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
        service.wait_ready(config.workers)
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
            queued = [t for t in checked["triggered"] if t["dag_id"] == ct_dag]
            if queued:
                rec.triggered = True
                conf = {**queued[0]["conf"], "as_of": (day + dt.timedelta(days=1)).isoformat()}
                retrain = runner.trigger(ct_dag, conf)
                runner.retire_queued()
                rec.ct_version = str((retrain["xcom"].get("train") or {}).get("version"))
                rec.ct_promoted = bool(retrain["xcom"].get("promote"))
                if rec.ct_promoted and not wait_served(service.url, rec.ct_version):
                    raise CtloopError(f"serving did not swap to version {rec.ct_version}")
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
                rec.scheduled_promoted = bool(scheduled["xcom"].get("promote"))
                version = str(rec.scheduled_version)
                if rec.scheduled_promoted and not wait_served(service.url, version):
                    raise CtloopError(f"serving did not swap to version {version}")
            records.append(rec)
            say(_line(rec))

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
        logged = PredictionLog(store).count(view.name)

    summary = _verdict(config, records, sent_total, logged, v1)
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    plot(records, drift_start.isoformat(), out / "demo_accuracy.png")
    summary["plot"] = str(out / "demo_accuracy.png")
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    store.dispose()
    return summary


def _line(rec: DayRecord) -> str:
    drift = "drift" if rec.drifting else "     "
    served = ",".join(f"v{v}" for v in rec.served_versions)
    ct = ""
    if rec.triggered:
        ct = f" -> ct run: v{rec.ct_version} " + ("promoted" if rec.ct_promoted else "refused")
    elif rec.scheduled_version:
        verdict = "promoted" if rec.scheduled_promoted else "champion kept"
        ct = f" -> scheduled ct run: v{rec.scheduled_version} {verdict}"
    return (f"{rec.day} {drift} traffic {rec.answered} ({served}), labels +{rec.labels_landed}; "
            f"monitor: {rec.monitor}{ct}")  # fmt: skip


def _verdict(
    config: DemoConfig, records: list[DayRecord], sent: int, logged: int, first: str
) -> dict[str, Any]:
    """Did the loop close? Each condition named, so a failure says which link broke."""
    promoted = [r for r in records if r.ct_promoted]
    tail = records[-3:]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) / len(known) if known else None

    served_tail = mean([r.served_accuracy for r in tail])
    static_tail = mean([r.static_accuracy for r in tail])
    oracle_tail = mean([r.oracle_accuracy for r in tail])
    drifting = [r for r in records if r.drifting]
    checks = {
        "first champion promoted": bool(first),
        "drift found by the monitor": any(r.monitor_status in ("drift", "decay") for r in drifting),
        "no false alarm before drift": not any(
            r.triggered for r in records if not r.drifting
        ),
        "drift-triggered model promoted": bool(promoted),
        "drift-triggered model served": any(
            r.ct_version in later.served_versions
            for i, r in enumerate(records) if r.ct_promoted for later in records[i + 1 :]
        ),
        "every answer logged": sent == logged,
        "live accuracy recovered": (
            served_tail is not None and static_tail is not None
            and served_tail >= static_tail + config.min_recovery
        ),
        f"served within {config.oracle_tolerance} of the oracle": (
            served_tail is not None and oracle_tail is not None
            and served_tail >= oracle_tail - config.oracle_tolerance
        ),
    }  # fmt: skip
    return {
        "closed": all(checks.values()),
        "checks": checks,
        "answered": sent,
        "logged": logged,
        "first_champion": first,
        "promoted": [r.ct_version for r in promoted],
        "served_accuracy_last_days": served_tail,
        "static_accuracy_last_days": static_tail,
        "oracle_accuracy_last_days": oracle_tail,
        "timeline": [asdict(r) for r in records],
    }


def timeline_table(summary: dict[str, Any]) -> str:
    """The day-by-day timeline as a text table."""
    head = (f"{'day':<11} {'drift':<5} {'traffic':>7} {'served':<9} {'acc':>5} {'static':>6} "
            f"{'oracle':>6}  events")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in summary["timeline"]:
        acc = "" if r["served_accuracy"] is None else f"{r['served_accuracy']:.3f}"
        static = "" if r["static_accuracy"] is None else f"{r['static_accuracy']:.3f}"
        oracle = "" if r.get("oracle_accuracy") is None else f"{r['oracle_accuracy']:.3f}"
        events = r["monitor_status"] or ""
        if r["triggered"]:
            verdict = "promoted" if r["ct_promoted"] else "refused"
            events += f"; retrain -> v{r['ct_version']} {verdict}"
        elif r.get("scheduled_version"):
            verdict = "promoted" if r["scheduled_promoted"] else "kept champion"
            events += f"; schedule -> v{r['scheduled_version']} {verdict}"
        served = ",".join(f"v{v}" for v in r["served_versions"])
        lines.append(f"{r['day']:<11} {'yes' if r['drifting'] else '':<5} {r['answered']:>7} "
                     f"{served:<9} {acc:>5} {static:>6} {oracle:>6}  {events}")  # fmt: skip
    return "\n".join(lines)
