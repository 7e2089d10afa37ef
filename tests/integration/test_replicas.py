"""Serving replicas behind a real load balancer (issue 22, item 2): two `bentoml serve`
processes, each with its own state folder and prediction-log journal, behind HAProxy
routing on `/readyz`, logging into one MariaDB.

A promotion is told to every replica at once (`CTLOOP_SERVING_URL` lists them; polling is
set to a minute so only the fan-out can switch them): under steady load no request fails,
every answer names a version that was champion when it was sent, everything sent after
the promote step returned is the new version, and answered = logged. A replica killed
under load is taken out of rotation by the balancer's health checks, and once it is back
its journal replays, so answered = logged again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ctloop.dev.launcher import free_port
from ctloop.dev.stack.balancer import server_states, write_config
from ctloop.features.view import load_view_file
from ctloop.predlog.store import PredictionLog
from ctloop.settings import Settings
from ctloop.training.promotion import notify_serving
from tests.integration.test_faults import Traffic, logged_ids, wait_until
from tests.support.paths import FEATURES_DIR
from tests.support.serving import (
    Server,
    champion_and_challenger,
    descendants,
    records,
    service_env,
)
from tests.support.world import World, built_world

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "test-admin-token-" + uuid.uuid4().hex
CHECK_MS = 200


@dataclasses.dataclass
class ReplicaWorld(World):
    replicas: list[Server]
    envs: list[dict[str, str]]
    logs: list[Path]
    balancer: subprocess.Popen[bytes]
    balanced: str  # the load balancer's address
    stats: str  # its status page, CSV
    v1: str
    v2: str

    def told(self) -> Settings:
        """What the promote step runs with: every replica's own address."""
        urls = ",".join(s.url for s in self.replicas)
        return Settings(serving_url=urls, admin_token=TOKEN)


def _balancer_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaWorld]:
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    tmp = tmp_path_factory.mktemp("replicas")
    with built_world(tmp, [view], prefix="ctloop_replicas") as shared:
        registry = shared.registry
        v1, v2 = champion_and_challenger(view, registry)
        replicas: list[Server] = []
        envs, logs = [], []
        balancer = None
        try:
            for i in (1, 2):  # own state folder each: nothing shared but MariaDB and MLflow
                env = service_env(tmp / f"replica{i}", registry.tracking_uri, shared.url, TOKEN,
                                  WORKERS="1", POLL_SECONDS="60")  # fmt: skip
                envs.append(env)
                logs.append(tmp / f"replica{i}.log")
                replicas.append(Server(env, logs[-1]))
            for server in replicas:
                server.wait_ready()
            port, stats = free_port(), free_port()
            config = write_config(tmp / "balancer", f"127.0.0.1:{port}",
                                  [f"127.0.0.1:{s.port}" for s in replicas], CHECK_MS,
                                  stats_bind=f"127.0.0.1:{stats}")  # fmt: skip
            balancer = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)],
                stdout=subprocess.DEVNULL, stderr=(tmp / "haproxy.log").open("wb"),
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _balancer_ready(url), 30, "HAProxy routes to a ready replica",
                       tmp / "haproxy.log")  # fmt: skip
            yield shared.extended(
                ReplicaWorld, replicas=replicas, envs=envs, logs=logs, balancer=balancer,
                balanced=url, stats=f"http://127.0.0.1:{stats}/stats;csv", v1=v1, v2=v2,
            )  # fmt: skip
        finally:
            if balancer is not None:
                balancer.terminate()
                balancer.wait(10)
            for server in replicas:
                server.stop()


def _states(world: ReplicaWorld) -> dict[str, str]:
    return server_states(httpx.get(world.stats, timeout=5).text)


def _settle(world: ReplicaWorld, answered: set[str]) -> list[str]:
    """The log once every answered row is in (flush interval 2 s)."""
    wait_until(lambda: answered <= set(logged_ids(world.store)), 60,
               lambda: f"{len(answered - set(logged_ids(world.store)))} answered rows unlogged",
               world.logs[0])  # fmt: skip
    return logged_ids(world.store)


def test_a_promotion_reaches_every_replica_at_once_under_load(world: ReplicaWorld) -> None:
    view, registry = world.view, world.registry
    before = set(logged_ids(world.store))
    traffic = Traffic(world.balanced, records(view, 100, seed=41), threads=3, pause=0.01).start()
    try:
        time.sleep(2)
        began = time.monotonic()
        registry.promote(view.name, world.v2)
        told = notify_serving(world.told(), view.name, world.v2)
        returned = time.monotonic()
        time.sleep(3)
    finally:
        traffic.stop()
    assert told.startswith("serving replicas reloaded: 2 of 2"), told
    assert traffic.failures == [], traffic.failures[:5]
    sent = traffic.sent
    assert {v for t, _, v in sent if t < began} == {world.v1}
    assert {v for t, _, v in sent if t > returned} == {world.v2}
    assert len([1 for t, _, _ in sent if t > returned]) > 20  # the load went on
    ids = traffic.ids()
    logged = _settle(world, ids)
    new = [i for i in logged if i not in before]
    assert sorted(new) == sorted(ids) and len(set(new)) == len(new)  # answered = logged
    frame = PredictionLog(world.store).read(
        view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), expand_features=False
    )
    versions = dict(zip(frame["request_id"], frame["model_version"], strict=True))
    assert all(versions[rid] == v for _, rid, v in sent)  # each row names what answered it
    print(f"promotion: notify took {returned - began:.2f} s over 2 replicas")
    registry.promote(view.name, world.v1)  # back, for the next test
    assert notify_serving(world.told(), view.name, world.v1).startswith(
        "serving replicas reloaded: 2 of 2"
    )


def test_a_killed_replica_leaves_rotation_and_loses_no_answered_row(world: ReplicaWorld) -> None:
    view = world.view
    victim = world.replicas[1]
    before = set(logged_ids(world.store))
    traffic = Traffic(world.balanced, records(view, 100, seed=42), threads=3, pause=0.01).start()
    try:
        time.sleep(2)
        for pid in [victim.proc.pid, *descendants(victim.proc.pid)]:
            os.kill(pid, signal.SIGKILL)  # the whole replica: server and worker
        killed = time.monotonic()
        time.sleep(2 * CHECK_MS / 1000 * 2 + 2)  # past `fall` failed checks, with margin
        settled = time.monotonic()
        time.sleep(2)
    finally:
        traffic.stop()
    assert _states(world) == {"replica1": "UP", "replica2": "DOWN"}  # out of rotation
    late = [what for t, what in traffic.failures if t > settled]
    assert late == [], late[:5]  # out of rotation: nothing fails once the checks saw it
    assert all(t >= killed - 1 for t, _ in traffic.failures), traffic.failures[:5]
    # back on its own state folder: its journal replays what it answered before dying
    world.replicas[1] = Server(world.envs[1], world.logs[1].with_suffix(".restarted.log"),
                               port=victim.port)  # fmt: skip
    world.replicas[1].wait_ready()
    ids = traffic.ids()
    logged = _settle(world, ids)
    new = [i for i in logged if i not in before]
    assert sorted(new) == sorted(ids)  # answered = logged, exactly once
    wait_until(lambda: _states(world) == {"replica1": "UP", "replica2": "UP"}, 30,
               lambda: f"the restarted replica back in rotation: {_states(world)}",
               world.logs[1])  # fmt: skip
