"""Helpers for tests that run the prediction service as it runs in production.

A real `bentoml serve` process (started by `ctloop.dev.launcher`, as the demo and the
benchmarks start it), a small real CatBoost champion registered the way the pipeline
registers it, request bodies drawn from the synthetic stream, and a TCP relay that lets a
test cut the service's database and bring it back. Shared by the serving, load, fuzz,
faults, Bento and any-task tests so each starts the service the same way; `records` and
`labelled` also feed the unit tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ctloop.dev import launcher
from ctloop.dev.launcher import free_port
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, stream
from ctloop.registry import GATES, Registry, metric_tags
from tests.support.paths import FEATURES_DIR, ROOT

START = dt.date(2026, 1, 1)
READY_TIMEOUT = 240


def labelled(view: FeatureView, start: dt.date, days: int, seed: int) -> pd.DataFrame:
    """Synthetic features with their labels joined: a training set without a store."""
    parts = []
    for _, features, labels in stream(view, start, days, StreamConfig(seed=seed, rows_per_day=300)):
        keys = [view.entity, view.event_date]
        parts.append(features.merge(labels[[*keys, view.label.name]], on=keys))
    return pd.concat(parts, ignore_index=True)


def champion_and_challenger(view: FeatureView, registry: Registry) -> tuple[str, str]:
    """Two gated versions (seeds 5 and 6), the first promoted: what the serving worlds swap
    between."""
    v1 = register_version(view, registry, seed=5)
    v2 = register_version(view, registry, seed=6)
    registry.promote(view.name, v1)
    return v1, v2


def register_version(
    view: FeatureView,
    registry: Registry,
    seed: int,
    gated: bool = True,
    shuffle: bool = False,
    frame: pd.DataFrame | None = None,
) -> str:
    """Train a small real CatBoost model and register it as the pipeline does (on shuffled
    labels with `shuffle`: a model that learned nothing, for the gates to catch). Trained
    as of the day after `frame` (features and label) when given, else on 20 synthetic days
    of the view's stream."""
    # heavy (MLflow, CatBoost): only the tests that register a model pay for them, not
    # the unit tier that imports `records` from here
    import mlflow
    import mlflow.catboost

    from ctloop.training import fit as training

    small = view.model_copy(
        update={"training": view.training.model_copy(update={"iterations": 40, "seed": seed})}
    )
    if frame is None:
        frame, cutoff = labelled(view, START, 20, seed), pd.Timestamp("2026-01-21")
    else:
        frame = frame.assign(**{view.event_date: pd.to_datetime(frame[view.event_date])})
        cutoff = frame[view.event_date].max().normalize() + pd.Timedelta(days=1)
    if shuffle:
        label = view.label.name
        frame[label] = frame[label].sample(frac=1, random_state=seed).to_numpy()
    result = training.fit(small, frame, cutoff)
    registry.activate()
    with mlflow.start_run(experiment_id=registry.experiment_id(view.name)):
        info = mlflow.catboost.log_model(
            result.model, name="model", registered_model_name=view.name,
            pip_requirements=["catboost"],
        )  # fmt: skip
    version = str(info.registered_model_version)
    tags = metric_tags(result.metrics, view.primary_metric)
    registry.set_tags(view.name, version, {"window": "2026-01-01..2026-01-20", **tags})
    if gated:  # as the pipeline's gates tag a version they passed; serving refuses others
        registry.set_tags(view.name, version, {f"gate.{g}": "passed" for g in GATES})
    return version


def records(view: FeatureView, n: int, seed: int = 99) -> list[dict[str, Any]]:
    """Request bodies from unseen synthetic days: JSON-able, missing values as null."""
    config = StreamConfig(seed=seed, rows_per_day=n)
    frame = next(iter(stream(view, dt.date(2026, 2, 1), 1, config)))[1]
    out = []
    for rec in frame[[view.entity, *view.feature_names]].to_dict("records"):
        clean = {}
        for key, value in rec.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                clean[key] = None
            elif isinstance(value, np.generic):
                clean[key] = value.item()
            else:
                clean[key] = value
        clean[view.entity] = str(clean[view.entity])
        out.append(clean)
    return out


def service_env(
    tmp: Path, tracking_uri: str, store_url: str, admin_token: str, **serving: str
) -> dict[str, str]:
    """The environment of a test service: this test's stores only, nothing inherited.

    Every CTLOOP_/MLFLOW_ variable of the calling shell is dropped so a developer's `.env`
    or exported settings cannot point the service at a real store. `serving` adds or
    overrides `CTLOOP_SERVING_<KEY>` variables (e.g. `MAX_BATCH="100"`).
    """
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))},
        "CTLOOP_DATA_DIR": str(tmp),
        "CTLOOP_FEATURES_DIR": str(FEATURES_DIR),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "FEATURE_STORE_URL": store_url,
        "CTLOOP_ADMIN_TOKEN": admin_token,
        "CTLOOP_SERVING_WORKERS": "2",
        "CTLOOP_SERVING_POLL_SECONDS": "3",
        "CTLOOP_SERVING_LOG_FLUSH_SECONDS": "2",
        "CTLOOP_SERVING_LOG_RETRY_SECONDS": "1",
        "CTLOOP_SERVING_MAX_BATCH": "100",
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    env.update({f"CTLOOP_SERVING_{key.upper()}": value for key, value in serving.items()})
    return env


def client() -> httpx.Client:
    """New connection per request, so the kernel spreads requests over both workers."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def metadata_of_workers(url: str, calls: int = 4) -> list[dict[str, Any]]:
    """`/metadata` asked `calls` times at once, each on its own connection. Calls one after
    another may all be accepted by the same worker (the kernel wakes whichever waits
    first, and a worker that just answered often does); concurrent calls reach both. A
    call that fails (a worker restarting) is left out."""

    def one(_: int) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError, ValueError), httpx.Client(timeout=5) as http:
            return http.get(f"{url}/metadata").json()
        return None

    with ThreadPoolExecutor(max_workers=calls) as pool:
        return [meta for meta in pool.map(one, range(calls)) if meta is not None]


class TcpProxy:
    """A TCP relay in front of MariaDB that the test can cut and restore."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 3306)) -> None:
        """Relay to `target` on a free port, from an event loop in a thread of its own."""
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def start(self) -> None:
        """Accept connections again: the database is back."""

        async def go() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        self._call(go())

    def stop(self) -> None:
        """Refuse new connections and cut the open ones: the database is gone."""

        async def go() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()

        self._call(go())

    def close(self) -> None:
        """Cut everything and stop the relay's thread."""
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.discard(writer)
        self.writers.discard(up_writer)


class Server(launcher.Server):
    """The prediction service as the tests run it: started at once on a free port, and
    failing the test (with the log's tail) when it does not get ready."""

    def __init__(
        self, env: dict[str, str], log_path: Path, target: str = launcher.SERVICE_TARGET,
        cwd: Path = ROOT, port: int | None = None,
    ) -> None:  # fmt: skip
        """`target` is what `bentoml serve` gets: the service in the checkout, or a Bento tag;
        `port` a fixed one (a restart where a load balancer expects it), else a free one."""
        port = port or free_port()
        super().__init__(launcher.bentoml_command(port, target=target), env, port, log_path,
                         cwd, ready_timeout=READY_TIMEOUT)  # fmt: skip
        self.start()

    def wait_ready(self, timeout: float | None = None, ready: launcher.Ready | None = None) -> None:
        """Until /readyz answers 200 (or `ready` passes); fails the test otherwise."""
        try:
            super().wait_ready(timeout, ready)
        except launcher.ServerNotReadyError as exc:
            pytest.fail(str(exc))

    def wait_every_worker(self, workers: int = 2) -> None:
        """Wait until every worker serves a model, not only the one /readyz reached."""
        self.wait_ready(ready=launcher.every_worker_loaded(workers))


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, theirs, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def gone(pid: int) -> bool:
    """The process has exited (no /proc entry, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def sigkill_service(server: Server, timeout: float = 30) -> list[int]:
    """SIGKILL `bentoml serve` and all its workers at once, as a crash or the OOM killer
    would, and wait until they are gone; the pids killed.

    BentoML starts each worker in a session of its own, so SIGKILL to the server's process
    group kills the server alone: its workers live on as orphans, serving on the socket they
    inherited and flushing their logs, which is no crash at all. They are killed by pid.
    """
    pids = [server.proc.pid, *descendants(server.proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            pytest.fail(f"processes {pids} of the service outlived SIGKILL")
        time.sleep(0.1)
    server.stop()  # the bookkeeping: the group is gone already
    return pids
