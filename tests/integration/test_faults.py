"""Faults injected into the running system: every dependency dies and comes back.

Serving (one real `bentoml serve` with two workers, its registry a real `mlflow server`
process, its prediction log in MariaDB behind a TCP relay the test can cut):

1. the database is lost and restored twice under concurrent load: no request fails, and
   every answer ends up in `prediction_log` exactly once, through both workers' spill files;
2. the MLflow server is killed: the service keeps answering with the model it has, reports
   the dead registry within seconds, and picks up a promotion once MLflow is back;
3. SIGTERM while the database is down: the service exits 0, what it could not write is in
   spill files, and the next server replays them;
4. SIGTERM under load with the database up: exit 0, every answer logged, no spill file.

Continuous training (the CT DAG run by Airflow's `dag.test()`, and the pipeline library):

5. the MLflow server dies while a blessed candidate is being infra-checked; Airflow retries
   the task in the same run after MLflow is back and the run promotes the candidate;
6. the pipeline process is SIGKILLed right after a version is registered (before it is
   tagged) and again between the two alias moves of a promotion; retrying the same run
   completes, and no half-made version ever holds `champion`.

The feature store is compared before and after every CT fault (row counts and MariaDB's
CHECKSUM TABLE of the features and labels tables). Traffic is local, bounded in rate and
time; every wait has a timeout and shows the relevant log tail when it runs out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from ctloop.features.view import FeatureView, load_view_file
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from ctloop.training import pipeline
from tests.support.airflow import AirflowProcess, airflow_env
from tests.support.paths import FEATURES_DIR, ROOT
from tests.support.serving import (
    Server,
    TcpProxy,
    champion_and_challenger,
    free_port,
    metadata_of_workers,
    records,
    service_env,
)
from tests.support.world import History, World, built_world, write_history

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "test-admin-token-" + uuid.uuid4().hex
VIEW_FILE = FEATURES_DIR / "credit_score.yaml"


def tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    log: Path,
    every: float = 0.25,
) -> Any:
    """Poll until `condition()` is truthy and return it; fail naming `what` (a text, or a
    function giving it at the time of failure) with the tail of the relevant log."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            pytest.fail(f"{text}: not within {timeout:.0f}s\n--- {log.name} ---\n{tail(log)}")
        time.sleep(every)


# ====================================================================== an MLflow server


class MlflowServer:
    """A real `mlflow server` on a fixed port and store, that a test can kill and restart.

    It serves the artifacts too (`--artifacts-destination`, artifacts proxied over HTTP), so
    a model load depends on this process like every registry call. MLflow 3's background
    job runner (huey consumers for GenAI jobs, seven processes) is not needed for tracking
    or the registry and is switched off to keep the machine's two cores for the test.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "mlflow-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)

    @property
    def store_uri(self) -> str:
        """The backend store, for reading the registry while the server is down."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def start(self, timeout: float = 240) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CTLOOP_"))}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log_path.open("a") as log:
            log.write(f"\n=== start at {dt.datetime.now().isoformat()} ===\n")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", self.store_uri,
                 "--artifacts-destination", str(self.root / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n"
                            f"{tail(self.log_path)}")  # fmt: skip
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        pytest.fail(f"mlflow server not ready after {timeout:.0f}s:\n{tail(self.log_path)}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Crash it: SIGKILL to the whole process group (server and its uvicorn worker)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    server.start()
    try:
        yield server
    finally:
        server.close()


# ====================================================================== serving under faults


@dataclasses.dataclass
class ServingFaultsWorld(World):
    """The shared world serving two versions registered on the MLflow server (v1 the
    champion) through `server`, which reaches MariaDB through `proxy`. A test may replace
    `server` (the SIGTERM tests); `env` starts another one like it."""

    mlflow: MlflowServer
    proxy: TcpProxy
    v1: str
    v2: str
    env: dict[str, str]
    server: Server


@pytest.fixture(scope="module")
def serving(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingFaultsWorld]:
    """Two small champions registered on the MLflow server (v1 promoted), a MariaDB
    prediction log behind a cuttable relay, and `bentoml serve` (2 workers) polling the
    registry every 2 s."""
    view = load_view_file(VIEW_FILE)
    tmp = tmp_path_factory.mktemp("serving_faults")
    proxy = TcpProxy()
    proxy.start()
    try:
        with built_world(
            tmp, [view], prefix="ctloop_faults", tracking_uri=mlflow_server.url
        ) as shared:
            registry = shared.registry
            v1, v2 = champion_and_challenger(view, registry)
            name = shared.url.rsplit("/", 1)[1]
            env = service_env(
                tmp, mlflow_server.url, f"mysql+pymysql://root@127.0.0.1:{proxy.port}/{name}",
                TOKEN, POLL_SECONDS="2",
            )  # fmt: skip
            world = shared.extended(
                ServingFaultsWorld, mlflow=mlflow_server, proxy=proxy, v1=v1, v2=v2, env=env,
                server=Server(env, tmp / "serve-1.log"),
            )  # fmt: skip
            try:
                world.server.wait_every_worker()  # not only the one /readyz reached
                yield world
            finally:
                world.server.stop()
    finally:
        proxy.close()


class Traffic:
    """Steady concurrent traffic from httpx threads: `threads - 1` send `/predict`, one sends
    `/predict_batch` of 5 records; every answer and every failure is recorded with its time.

    A new connection per request (as `tests.support.serving.client`), so the kernel spreads
    requests over both workers. Bounded: a pause between requests and a hard deadline.
    """

    def __init__(
        self, url: str, recs: list[dict[str, Any]], threads: int = 4, pause: float = 0.02,
        max_seconds: float = 120,
    ) -> None:  # fmt: skip
        self.url = url
        self.recs = recs
        self.pause = pause
        self.deadline = time.monotonic() + max_seconds
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str, str]] = []  # (time, request id, model version)
        self.sent: list[tuple[float, str, str]] = []  # the same, by the time it was sent
        self.failures: list[tuple[float, str]] = []
        self.threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)
        ]

    def start(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(20)
        assert not any(t.is_alive() for t in self.threads), "traffic threads did not stop"

    def _loop(self, index: int) -> None:
        batch = index == 0
        i = index * 7
        with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                i += 1
                sent = time.monotonic()
                try:
                    if batch:
                        part = [self.recs[(i + k) % len(self.recs)] for k in range(5)]
                        r = http.post(f"{self.url}/predict_batch", json={"records": part})
                    else:
                        r = http.post(f"{self.url}/predict", json=self.recs[i % len(self.recs)])
                except httpx.HTTPError as exc:
                    self._fail(repr(exc))
                else:
                    if r.status_code != 200:
                        self._fail(f"{r.status_code}: {r.text[:200]}")
                    else:
                        self._answered(r.json(), sent)
                time.sleep(self.pause)

    def _answered(self, body: dict[str, Any], sent: float) -> None:
        now = time.monotonic()
        rows = body.get("predictions", [body])
        version = body["model_version"]
        with self.lock:
            self.answers.extend((now, row["request_id"], version) for row in rows)
            self.sent.extend((sent, row["request_id"], version) for row in rows)

    def _fail(self, what: str) -> None:
        with self.lock:
            self.failures.append((time.monotonic(), what))

    def ids(self) -> set[str]:
        with self.lock:
            return {rid for _, rid, _ in self.answers}

    def versions_since(self, since: float) -> list[str]:
        with self.lock:
            return [v for t, _, v in self.answers if t >= since]


def logged_ids(store: FeatureStore) -> list[str]:
    """Every request id in the prediction log's tables, read directly (not through the
    relay)."""
    return PredictionLog(store).request_ids()


def worker_metadata(
    url: str, want: Callable[[dict[str, Any]], bool], timeout: float, log: Path, what: str
) -> dict[int, dict[str, Any]]:
    """Ask /metadata until both workers (told apart by pid) satisfy `want`; their answers."""
    seen: dict[int, dict[str, Any]] = {}

    def both() -> dict[int, dict[str, Any]] | None:
        for meta in metadata_of_workers(url):
            if want(meta):
                seen[meta["worker"]["pid"]] = meta
        return dict(seen) if len(seen) >= 2 else None

    return wait_until(both, timeout, lambda: f"{what} (workers so far: {sorted(seen)})", log, 0.1)


def spill_paths(state_dir: Path) -> list[Path]:
    """Spill files proper; a running worker's journal segments (every row, briefly) aside."""
    found = sorted((state_dir / "spill").glob("*.jsonl"))
    return [p for p in found if not p.name.startswith("journal-")]


def spill_rows(state_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in spill_paths(state_dir):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def spilling(meta: dict[str, Any]) -> bool:
    """This worker's writer found the database down and put rows in a spill file."""
    writer = meta["prediction_log"]["writer"]
    return writer["database_ok"] is False and writer["spilled"] > 0


def test_database_lost_twice_under_concurrent_load(serving: ServingFaultsWorld) -> None:
    """Two outages of MariaDB under a steady multi-threaded stream across both workers."""
    store, proxy, server = serving.store, serving.proxy, serving.server
    traffic = Traffic(server.url, records(serving.view, 200, seed=21)).start()
    try:
        time.sleep(3)
        for outage in (1, 2):
            proxy.stop()  # refuse new connections, cut the open ones
            try:
                down = worker_metadata(
                    server.url, spilling, 20, server.log_path,
                    f"outage {outage}: both writers spilling",
                )  # fmt: skip
                time.sleep(2)
            finally:
                proxy.start()
            assert len(down) == 2
            time.sleep(4)  # traffic goes on with the database back
    finally:
        traffic.stop()
    assert not traffic.failures, traffic.failures[:5]
    answered = traffic.ids()
    assert len(answered) > 500, "too little traffic to mean anything"

    wait_until(
        lambda: len(logged_ids(store)) >= len(answered), 60,
        f"all {len(answered)} answers in prediction_log", server.log_path,
    )  # fmt: skip
    time.sleep(2.5)  # one more flush interval: nothing else may appear
    ids = logged_ids(store)
    assert len(ids) == len(set(ids)) == len(answered)  # exactly once each
    assert set(ids) == answered

    def settled() -> dict[int, dict[str, Any]] | None:
        """Both writers' counters once every spilled row went back into the table."""
        writers = {
            pid: meta["prediction_log"]["writer"]
            for pid, meta in worker_metadata(
                server.url, lambda m: m["prediction_log"]["writer"]["spill_file"] is None,
                15, server.log_path, "both writers closed their spill files",
            ).items()
        }  # fmt: skip
        spilled = sum(w["spilled"] for w in writers.values())
        back = sum(w["replayed"] + w["duplicates"] for w in writers.values())
        return writers if back == spilled else None

    writers = wait_until(settled, 30, "replayed rows add up to spilled rows", server.log_path)
    assert all(w["spilled"] > 0 for w in writers.values()), writers  # both workers spilled
    assert all(w["failed"] == 0 and w["database_ok"] for w in writers.values()), writers
    print(f"{len(answered)} answered; spilled/replayed per worker: "
          f"{[(w['spilled'], w['replayed']) for w in writers.values()]}")  # fmt: skip
    assert not spill_paths(serving.tmp / "serving")


def test_mlflow_down_keeps_serving_and_a_promotion_arrives_by_polling(
    serving: ServingFaultsWorld,
) -> None:
    """Kill the tracking server: answers continue from the loaded champion, /metadata says
    the registry is unreachable within seconds (MLflow's own client would retry for about
    four minutes per call: the service caps that), and once MLflow is back a promotion made
    in the registry reaches both workers by polling alone."""
    view, registry, mlflow = serving.view, serving.registry, serving.mlflow
    server, v1, v2 = serving.server, serving.v1, serving.v2
    assert registry.champion(view.name).version == v1
    traffic = Traffic(server.url, records(view, 50, seed=22), threads=2, pause=0.05).start()
    try:
        time.sleep(1)
        mlflow.kill()
        killed = time.monotonic()
        down = worker_metadata(
            server.url, lambda m: m["model"]["registry_ok"] is False, 30, server.log_path,
            "both workers report registry_ok false",
        )  # fmt: skip
        noticed = time.monotonic() - killed
        for meta in down.values():
            assert meta["version"] == v1
            assert "cannot read the registry" in meta["model"]["last_error"]
            assert str(mlflow.port) in meta["model"]["last_error"]
        time.sleep(2)
        assert set(traffic.versions_since(killed)) == {v1}  # still answering, with v1
        assert len(traffic.versions_since(killed + noticed)) > 10

        mlflow.start()  # same port, same store
        registry.promote(view.name, v2)
        promoted = time.monotonic()
        worker_metadata(
            server.url, lambda m: m["version"] == v2 and m["model"]["registry_ok"] is True,
            60, server.log_path, "both workers serve v2 after polling the restarted registry",
        )  # fmt: skip
        time.sleep(1)
        assert set(traffic.versions_since(time.monotonic() - 0.5)) == {v2}
    finally:
        traffic.stop()
        mlflow.ensure_running()
    assert not traffic.failures, traffic.failures[:5]
    assert noticed < 20, f"the dead registry was reported after {noticed:.1f}s"
    print(f"registry loss reported after {noticed:.1f}s; v2 served "
          f"{time.monotonic() - promoted:.1f}s after promotion (upper bound)")  # fmt: skip


def sigterm(server: Server, timeout: float = 60) -> tuple[int | None, float]:
    """SIGTERM to the `bentoml serve` process (its process group leader); exit code, time."""
    start = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    try:
        code = server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"bentoml serve still running {timeout:.0f}s after SIGTERM:\n{server.tail()}")
    elapsed = time.monotonic() - start
    server.stop()  # closes its log; the process is gone already
    return code, elapsed


def test_sigterm_while_the_database_is_down_spills_and_the_next_server_replays(
    serving: ServingFaultsWorld,
) -> None:
    """SIGTERM with MariaDB unreachable: the service still exits 0 at once; the answers it
    could not write are in spill files, and the next server on the same state folder
    replays them at start-up, each exactly once."""
    store, proxy, server = serving.store, serving.proxy, serving.server
    state = serving.tmp / "serving"
    before = set(logged_ids(store))
    traffic = Traffic(server.url, records(serving.view, 100, seed=23)).start()
    try:
        time.sleep(2)
        proxy.stop()
        time.sleep(3)  # rows pile up: queued and spilled
        code, elapsed = sigterm(server)
    finally:
        traffic.stop()
    assert code == 0, server.tail()
    assert elapsed < 45, f"took {elapsed:.1f}s to exit"
    answered = traffic.ids()
    in_db = set(logged_ids(store)) - before
    in_spill = {row["request_id"] for row in spill_rows(state)}
    assert in_spill, f"expected spill files under {state}; log:\n{server.tail()}"
    assert answered <= in_db | in_spill, f"{len(answered - in_db - in_spill)} answers lost"

    proxy.start()
    serving.server = successor = Server(serving.env, serving.tmp / "serve-2.log")
    successor.wait_every_worker()
    wait_until(
        lambda: answered <= set(logged_ids(store)) and not spill_rows(state), 60,
        "the next server replayed the spill files", successor.log_path,
    )  # fmt: skip
    ids = logged_ids(store)
    assert len(ids) == len(set(ids))  # exactly once, replay or not
    assert "replaying prediction log spill file" in successor.log_path.read_text()
    print(f"{len(answered)} answered, exit in {elapsed:.1f}s, {len(in_spill)} left in spill "
          "files, all replayed by the next server")  # fmt: skip


def test_sigterm_under_load_exits_cleanly_with_every_answer_logged(
    serving: ServingFaultsWorld,
) -> None:
    """SIGTERM mid-stream with the database up: exit 0 within the bound, every request that
    got a 200 (including those in flight at the signal) is in prediction_log, and no spill
    file is left: nothing waits for a next server."""
    store, server = serving.store, serving.server
    state = serving.tmp / "serving"
    assert not spill_rows(state)
    traffic = Traffic(server.url, records(serving.view, 100, seed=24)).start()
    try:
        time.sleep(3)
        signalled = time.monotonic()
        code, elapsed = sigterm(server)
    finally:
        traffic.stop()
    assert code == 0, server.tail()
    assert elapsed < 30, f"took {elapsed:.1f}s to exit"
    before_signal = [f for t, f in traffic.failures if t < signalled]
    assert not before_signal, before_signal[:5]
    answered = traffic.ids()
    assert answered <= set(logged_ids(store)), "answered requests missing from prediction_log"
    assert not list((state / "spill").glob("*.jsonl")), "spill files left behind"
    in_flight = len(traffic.versions_since(signalled))
    print(f"{len(answered)} answered ({in_flight} after SIGTERM), exit in {elapsed:.1f}s")


# ====================================================================== CT runs killed mid-way

CT_VIEW = "credit_retry"  # a copy of credit_score: its own registered model on the server
START = dt.date(2026, 1, 1)
DAYS = 30
AS_OF = START + dt.timedelta(days=DAYS)
HISTORY = History(start=START, days=DAYS, rows_per_day=300, seed=11, labels_before=AS_OF)


def ct_view_folder(tmp: Path) -> Path:
    """The shipped view under another name and with fewer boosting rounds (faster runs)."""
    raw = yaml.safe_load(VIEW_FILE.read_text(encoding="utf-8"))
    raw["name"] = CT_VIEW
    raw["training"]["iterations"] = 150
    folder = tmp / "features"
    folder.mkdir(exist_ok=True)
    (folder / f"{CT_VIEW}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def store_checksums(url: str, view: FeatureView) -> dict[str, tuple[int, int]]:
    """Row count and MariaDB's CHECKSUM TABLE (content) of the view's two tables."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {
                table: (
                    conn.execute(sa.text(f"SELECT COUNT(*) FROM `{table}`")).scalar_one(),
                    conn.execute(sa.text(f"CHECKSUM TABLE `{table}`")).one()[1],
                )
                for table in (view.features_table, view.labels_table)
            }
    finally:
        engine.dispose()


@dataclasses.dataclass
class CtFaultsWorld(World):
    """The shared world on the MLflow server with a first champion, and Airflow in a child
    process whose MLflow client does not retry."""

    mlflow: MlflowServer
    airflow: AirflowProcess


@pytest.fixture(scope="module")
def ct(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CtFaultsWorld]:
    """30 days of history in MariaDB, a first champion trained by the pipeline as of
    AS_OF - 2 on the MLflow server, and Airflow in a child process (as `test_dags.py`).

    The Airflow child's MLflow client does not retry (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0):
    the outage the test makes is longer than MLflow's own retry budget, so it reaches
    Airflow, whose task retry is what is under test.
    """
    mlflow_server.ensure_running()
    tmp = tmp_path_factory.mktemp("ct_faults")
    features = ct_view_folder(tmp)
    view = load_view_file(features / f"{CT_VIEW}.yaml")
    with built_world(
        tmp, [view], prefix="ctloop_ctfaults", features_dir=features,
        tracking_uri=mlflow_server.url,
    ) as shared:  # fmt: skip
        conn_uri = sa.engine.make_url(shared.url).set(drivername="mysql")
        env = airflow_env(
            tmp,
            AIRFLOW_CONN_FEATURE_STORE=conn_uri.render_as_string(hide_password=False),
            MLFLOW_TRACKING_URI=mlflow_server.url,
            CTLOOP_FEATURES_DIR=str(features),
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            MLFLOW_HTTP_REQUEST_TIMEOUT="10",
            # room to restart MLflow before the retry, not the default minute idle
            CTLOOP_TASK_RETRY_DELAY_SECONDS="30",
        )
        airflow = AirflowProcess(tmp, env)  # starts while the history is written
        try:
            write_history(shared, HISTORY)
            first = pipeline.run_all(
                pipeline.Run(view, AS_OF - dt.timedelta(days=2), "manual", "first", "",
                             shared.settings)
            )  # fmt: skip
            assert first["promoted"] is True, first
            yield shared.extended(CtFaultsWorld, mlflow=mlflow_server, airflow=airflow)
        finally:
            airflow.close()


def test_ct_task_killed_before_promotion_is_retried_by_airflow(ct: CtFaultsWorld) -> None:
    """The CT DAG through Airflow (`dag.test()`): MLflow dies the moment the candidate is
    blessed, so `infra_check` fails; Airflow retries it in the same run after the DAG's
    retry_delay (30 s here), by which time MLflow is back, and the run promotes the fully
    checked candidate. While MLflow is down the registry (read from its store) still has
    the old champion; the feature store is untouched; no second version is registered."""
    view, registry, mlflow, airflow = ct.view, ct.registry, ct.mlflow, ct.airflow
    mlflow.ensure_running()
    before = store_checksums(ct.url, view)
    champion = registry.champion(view.name).version
    versions = [v.version for v in registry.versions(view.name)]
    as_of = (AS_OF - dt.timedelta(days=1)).isoformat()
    outcome: dict[str, Any] = {}

    def trigger() -> None:
        try:
            outcome["run"] = airflow.trigger(f"ct_{CT_VIEW}", {"as_of": as_of}, timeout=480)
        except BaseException as exc:  # pytest.fail() in the thread: hand it over
            outcome["error"] = exc

    started = airflow.log_path.stat().st_size
    runner = threading.Thread(target=trigger, daemon=True)
    runner.start()
    try:
        # The moment the candidate is blessed: the steps left (blessed, infra_check, promote)
        # take a few seconds, and every one after `blessed` needs MLflow.
        wait_until(
            lambda: "end task task_id=evaluate" in airflow.output(started), 300,
            "evaluate finished", airflow.log_path, every=0.05,
        )  # fmt: skip
        mlflow.kill()
        wait_until(
            lambda: "new_state=up_for_retry" in airflow.output(started), 90,
            "a task failed on the dead MLflow and waits for its retry", airflow.log_path,
        )  # fmt: skip
        offline = Registry(mlflow.store_uri)  # the registry's own store, server down
        assert offline.champion(view.name).version == champion
        [candidate] = [v for v in offline.versions(view.name) if v.version not in versions]
        assert candidate.tags["gate.model"] == "passed"
        mlflow.start()  # back before the retry (the DAG's retry_delay: 30 s here)
    finally:
        mlflow.ensure_running()
        runner.join(600)
    assert not runner.is_alive(), f"the DAG run did not finish:\n{tail(airflow.log_path)}"
    if "error" in outcome:
        raise outcome["error"]
    run = outcome["run"]
    assert run["state"] == "success", run["log"][-4000:]
    tries = {task: info["try_number"] for task, info in run["tasks"].items()}
    # infra_check (or, had it finished first, promote) failed on the dead MLflow: retried
    assert tries["infra_check"] + tries["promote"] >= 3, tries
    assert all(tries[t] == 1 for t in ("extract", "validate_data", "train", "evaluate")), tries
    assert "AirflowFailException" not in run["log"]  # an outage is retried, never failed fast
    assert {info["state"] for info in run["tasks"].values()} == {"success"}
    xcom = run["xcom"]
    assert xcom["train"]["version"] == candidate.version
    assert xcom["promote"]["champion"] == candidate.version
    assert xcom["promote"]["previous"] == champion
    promoted = registry.champion(view.name)
    assert promoted.version == candidate.version
    assert registry.previous(view.name).version == champion
    tags = promoted.tags
    assert (tags["gate.data"], tags["gate.model"], tags["gate.infra"]) == ("passed",) * 3
    assert tags["airflow_run_id"] == tags["promoted_by"] == run["run_id"]  # one run, retried
    assert [v.version for v in registry.versions(view.name)] == [*versions, candidate.version]
    assert store_checksums(ct.url, view) == before


KILLER = r"""
import datetime as dt
import os
import signal
import sys

from mlflow import MlflowClient

from ctloop.training import pipeline
from ctloop.features.view import load_view_file
from ctloop.registry import Registry
from ctloop.settings import Settings

view_file, as_of, run_id, hook = sys.argv[1:5]


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if hook == "registered":  # the first tags after log_model registered the version
    Registry.set_tags = die
elif hook == "promoting":  # after `previous` moved, before `champion` does
    move = MlflowClient.set_registered_model_alias

    def moving(self, name, alias, version):
        if alias == "champion":
            die()
        return move(self, name, alias, version)

    MlflowClient.set_registered_model_alias = moving
view = load_view_file(view_file)
run = pipeline.Run(view, dt.date.fromisoformat(as_of), "manual", "killed", run_id, Settings())
print(pipeline.run_all(run))
sys.exit("the kill hook never fired")
"""


def killed_run(ct: CtFaultsWorld, as_of: dt.date, run_id: str, hook: str) -> None:
    """Run the whole pipeline in a child process that SIGKILLs itself at `hook`."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CTLOOP_"))},
        "FEATURE_STORE_URL": ct.url,
        "MLFLOW_TRACKING_URI": ct.mlflow.url,
        "CTLOOP_DATA_DIR": str(ct.tmp / "data"),
        "CTLOOP_FEATURES_DIR": str(ct.settings.features_dir),
    }
    view_file = ct.settings.features_dir / f"{CT_VIEW}.yaml"
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(view_file), as_of.isoformat(), run_id, hook],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, (
        f"expected SIGKILL at '{hook}', got exit {done.returncode}:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


def test_sigkilled_ct_steps_leave_no_half_made_champion(ct: CtFaultsWorld) -> None:
    """The pipeline library, as a DAG task runs it, SIGKILLed at two points, then the same
    run (same run id) retried to completion:

    * right after log_model registered a version, before any tag: an untagged version is
      left behind; it cannot be promoted (its gates are missing) and the retry does not
      reuse it (no data fingerprint), so it trains and registers a fresh candidate;
    * between the two alias moves of a promotion (`previous` moved, `champion` not yet):
      the old champion still serves; the retry reuses the fully checked candidate and
      completes the move.
    """
    view, registry, mlflow = ct.view, ct.registry, ct.mlflow
    mlflow.ensure_running()
    before = store_checksums(ct.url, view)
    champion = registry.champion(view.name).version
    versions = [v.version for v in registry.versions(view.name)]
    run_id = "manual__sigkill_" + uuid.uuid4().hex[:8]

    killed_run(ct, AS_OF, run_id, "registered")
    [orphan] = [v for v in registry.versions(view.name) if v.version not in versions]
    assert not any(k.startswith(("gate.", "data_fingerprint")) for k in orphan.tags), orphan
    assert registry.champion(view.name).version == champion
    run = pipeline.Run(view, AS_OF, "manual", "killed", run_id, ct.settings)
    with pytest.raises(pipeline.ModelGateError, match="'missing'"):
        pipeline.promote(run, orphan.version)
    assert registry.champion(view.name).version == champion

    killed_run(ct, AS_OF, run_id, "promoting")
    new = [v for v in registry.versions(view.name) if v.version not in [*versions, orphan.version]]
    [candidate] = new
    assert (candidate.tags["gate.data"], candidate.tags["gate.model"],
            candidate.tags["gate.infra"]) == ("passed",) * 3  # fmt: skip
    assert registry.champion(view.name).version == champion  # the old one, still whole
    assert "promoted_at" not in registry.version(view.name, candidate.version).tags

    retried = pipeline.run_all(run)  # what Airflow's retry of the task does, same run id
    assert retried["train"]["reused"] is True
    assert retried["train"]["version"] == candidate.version
    assert retried["promoted"] is True
    assert registry.champion(view.name).version == candidate.version
    assert registry.previous(view.name).version == champion
    assert registry.version(view.name, candidate.version).tags["promoted_by"] == run_id
    assert [v.version for v in registry.versions(view.name)] == [
        *versions, orphan.version, candidate.version
    ]  # fmt: skip
    assert registry.champion(view.name).version != orphan.version
    assert store_checksums(ct.url, view) == before
