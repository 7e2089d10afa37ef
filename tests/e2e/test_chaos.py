"""Chaos: under steady load the service is SIGKILLed three times and its MariaDB twice, and
after recovery every answer a client got is in `prediction_log` exactly once.

The database is a private `mariadbd` started by this test (own datadir under tmp_path,
own port), so killing it touches nothing else on the machine; it is killed with SIGKILL
too, so each restart is an InnoDB crash recovery. The service is a real `bentoml serve`
with two workers; each SIGKILL takes the server and every worker (by pid: BentoML
workers run in sessions of their own), and the next server starts
on the same state folder. Before the last start a damaged spill file (good rows around a
line cut inside a multibyte character) is left in the spill folder: it must be
quarantined line by line and its good rows replayed.

Rows logged that no client saw answered are allowed only up to the requests in flight at
the three kills (a row is journaled just before its answer is sent).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.features.view import load_view_file
from ctloop.predlog.spill import to_line
from ctloop.registry import Registry
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from tests.integration.test_faults import Traffic, logged_ids, wait_until
from tests.support.paths import FEATURES_DIR
from tests.support.serving import (
    Server,
    free_port,
    records,
    register_version,
    service_env,
    sigkill_service,
)

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

THREADS = 4  # 3 x /predict, 1 x /predict_batch of 5
IN_FLIGHT = (THREADS - 1) + 5  # rows that can be journaled but not yet answered, per kill


class PrivateMariaDB:
    """A `mariadbd` of this test's own: datadir under `root`, a free port, root without a
    password on 127.0.0.1. `kill` is SIGKILL; `start` again recovers the same datadir."""

    def __init__(self, root: Path) -> None:
        self.datadir = root / "data"
        self.log = root / "mariadbd.log"
        self.port = free_port()
        self.user = getpass.getuser()
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
             "--auth-root-authentication-method=normal", "--skip-test-db",
             f"--user={self.user}"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def url(self, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["mariadbd", "--no-defaults", f"--datadir={self.datadir}",
                 f"--port={self.port}", "--bind-address=127.0.0.1",
                 f"--socket={self.datadir.parent / 'mariadbd.sock'}", f"--user={self.user}",
                 "--innodb-buffer-pool-size=64M", "--skip-log-bin"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        engine = sa.create_engine(self.url(), poolclass=sa.pool.NullPool)

        def answers() -> bool:
            with contextlib.suppress(sa.exc.OperationalError), engine.connect() as conn:
                return conn.execute(sa.text("SELECT 1")).scalar() == 1
            return False

        try:
            wait_until(answers, 60, "the private mariadbd answers", self.log)
        finally:
            engine.dispose()

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[PrivateMariaDB]:
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def damaged_spill_file(spill_dir: Path, view: str, version: str) -> tuple[set[str], int]:
    """A dead process's spill file: 40 good rows, with a line cut inside a multibyte
    character in the middle and at the end. Returns the good rows' ids and the number of
    damaged lines."""
    ids = [f"chaos-{uuid.uuid4().hex}" for _ in range(40)]
    lines = []
    for rid in ids:
        row = {
            "request_id": rid, "feature_view": view, "model_version": version,
            "entity_id": "Jos\u00e9", "prediction": "Good", "latency_ms": 1.0,
            "created_at": dt.datetime(2026, 3, 1, 12), "probabilities": {"Good": 1.0},
            "features": {"occupation": "Ing\u00e9nieur"},
        }  # fmt: skip
        lines.append(to_line(row).encode())
    cut = lines[0][: lines[0].index("\u00e9".encode()) + 1]  # inside the 2-byte character
    content = b"".join(lines[:20]) + cut + b"\n" + b"".join(lines[20:]) + cut
    spill_dir.mkdir(parents=True, exist_ok=True)
    (spill_dir / f"spill-999999-{time.time_ns()}-dead0000.jsonl").write_bytes(content)
    return set(ids), 2


def test_three_service_kills_and_two_database_kills_lose_no_answer(
    mariadb: PrivateMariaDB, tmp_path: Path
) -> None:
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    engine = sa.create_engine(mariadb.url(), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE DATABASE ctloop_chaos"))
    engine.dispose()
    url = mariadb.url("ctloop_chaos")
    settings = Settings(data_dir=tmp_path, features_dir=FEATURES_DIR, feature_store_url=url,
                        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    store = FeatureStore(url)
    store.init([view])
    registry = Registry.from_settings(settings)
    version = register_version(view, registry, seed=5)
    registry.promote(view.name, version)
    env = service_env(tmp_path, registry.tracking_uri, url, "chaos-token-" + uuid.uuid4().hex)
    spill_dir = tmp_path / "serving" / "spill"

    servers = [Server(env, tmp_path / "serve-0.log")]
    servers[0].wait_every_worker()
    traffic = Traffic(servers[0].url, records(view, 200, seed=41), threads=THREADS,
                      pause=0.01, max_seconds=500).start()  # fmt: skip

    def more_answers(n: int) -> None:
        goal = len(traffic.ids()) + n
        wait_until(lambda: len(traffic.ids()) >= goal, 60, f"{n} more answers",
                   servers[-1].log_path)  # fmt: skip

    def restart_service(damage: bool = False) -> None:
        assert len(sigkill_service(servers[-1])) >= 3  # server, 2 workers
        good = damaged_spill_file(spill_dir, view.name, version) if damage else None
        servers.append(Server(env, tmp_path / f"serve-{len(servers)}.log"))
        servers[-1].wait_every_worker()
        traffic.url = servers[-1].url
        if good is not None:
            damaged.update(good[0])

    damaged: set[str] = set()
    try:
        more_answers(200)
        restart_service()  # kill -9 number 1
        more_answers(200)
        mariadb.kill()  # database kill 1: the writers spill
        more_answers(200)
        mariadb.start()
        more_answers(100)
        restart_service()  # kill -9 number 2, maybe with spill files of its own
        mariadb.kill()  # database kill 2
        more_answers(200)
        mariadb.start()
        more_answers(100)
        restart_service(damage=True)  # kill -9 number 3; the next server meets bad bytes
        more_answers(200)
    finally:
        traffic.stop()
    last = servers[-1]
    try:
        answered = traffic.ids()
        wait_until(lambda: answered | damaged <= set(logged_ids(store)), 120,
                   lambda: f"{len(answered - set(logged_ids(store)))} answers not logged",
                   last.log_path)  # fmt: skip
        ids = logged_ids(store)
        assert len(ids) == len(set(ids)), "a request id logged twice"
        extra = set(ids) - answered - damaged
        assert len(extra) <= 3 * IN_FLIGHT, f"{len(extra)} rows logged without an answer"
        quarantine = list((spill_dir / "quarantine").glob("*"))
        assert len(quarantine) == 1, quarantine
        assert len(quarantine[0].read_text().splitlines()) == 2
        assert "quarantined" in last.log_path.read_text()
    finally:
        last.stop()
        store.dispose()
    assert not [p for p in spill_dir.glob("*.jsonl")], "spill or journal files left behind"
    print(
        f"{len(answered)} answered across 3 service kills and 2 database kills; "
        f"{len(extra)} logged rows were in flight at a kill"
    )
