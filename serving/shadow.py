"""Shadow scoring in a process of its own, so a challenger on trial never shares a core's
turn or the interpreter lock with the requests it shadows.

    python -m serving.shadow        (started by a worker; reads work on stdin)

Why a process: scored on a thread of the worker, the challenger's model call, its log rows
and its share of the log writer ran under the worker's GIL; a caller's request waited for
them (a niced thread made it worse: a low-priority thread that holds the GIL holds up the
request thread waiting for it). A child process has its own interpreter, runs under
SCHED_IDLE (only on CPU time the workers leave idle), and the worker only hands each
request's records over; a sender thread gathers them for a quarter second and sends them
pickled in one frame, scored in one model call.

Each worker starts its child when the first shadow work arrives. The child loads the
version named in each frame (through MLflow, as the worker did), scores the frame in one
call, and logs the rows (role `shadow`, request id + `.shadow`) through a prediction-log
writer of its own in the service's spill folder: journaled, spilled and replayed as the
worker's rows are. A child that dies is restarted with the next frame; the frames it had
not logged are lost, like the work a full queue sheds: shadow rows are evidence for a
trial, never answers, and the live gate compares only requests with both rows. On the
worker's shutdown (or death: its end of the pipe closes) the child logs what it was given
and exits.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from serving.config import SHADOW_LINGER_SECONDS

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Records waiting for the child per worker; more are skipped (shed), never answers."""

FRAME_RECORDS = 1_000
"""At most this many records per frame: what had queued goes over in one pickle and is
scored in one model call."""

RESTART_BACKOFF_SECONDS = 5.0
_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class ShadowWork:
    """Records a challenger on shadow trial is to score, with the caller's request ids."""

    version: str
    uri: str
    values: list[dict[str, Any]]
    ids: list[str]
    from_store: list[list[str]] | None


class ShadowScorer:
    """The worker's side: a bounded hand-over queue, a sender thread, the child process."""

    def __init__(
        self, max_pending: int = MAX_PENDING, linger: float = SHADOW_LINGER_SECONDS
    ) -> None:
        self.max_pending = max_pending
        self.linger = linger
        self.pending = 0
        self.skipped = 0
        self.sent = 0
        self.restarts = 0
        self._started_at = -RESTART_BACKOFF_SECONDS  # when the last child was started
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[ShadowWork | None] = queue.SimpleQueue()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="shadow-sender", daemon=True)
        self._thread.start()

    def submit(
        self,
        version: str,
        uri: str,
        values: Sequence[dict[str, Any]],
        ids: Sequence[str],
        from_store: Sequence[Sequence[str]] | None,
    ) -> bool:
        """Queue records for the challenger; False (and counted) when the queue is full.
        Never blocks: this runs on the request path, after the caller's answer is made."""
        with self._lock:
            if self.pending + len(values) > self.max_pending:
                self.skipped += len(values)
                return False
            self.pending += len(values)
        stores = [list(f) for f in from_store] if from_store is not None else None
        self._queue.put(ShadowWork(version, uri, list(values), list(ids), stores))
        return True

    def stats(self) -> dict[str, Any]:
        """For /metadata: what waits, what was shed, and the child serving this worker."""
        child = self._child
        return {
            "pending": self.pending,
            "skipped": self.skipped,
            "sent": self.sent,
            "child_pid": child.pid if child is not None and child.poll() is None else None,
            "child_restarts": self.restarts,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Hand over what is queued, then let the child log it and exit; a sender stuck
        on a child that stopped reading, or a child that does not exit, is killed."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        child, self._child = self._child, None
        if child is None:
            return
        if self._thread.is_alive():  # blocked writing to a child that does not read
            child.kill()  # (its pipe breaks, so the sender's write returns)
        try:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=timeout)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            log.warning("shadow scorer (pid %d) did not exit in %.0f s; killed", child.pid,
                        timeout)  # fmt: skip
            child.kill()
            child.wait()

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, size, stop = [item], len(item.values), False
            deadline = time.monotonic() + self.linger
            while size < FRAME_RECORDS:
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                work.append(more)
                size += len(more.values)
            for version in dict.fromkeys(w.version for w in work):
                self._send([w for w in work if w.version == version])
            if stop:
                return

    def _send(self, work: list[ShadowWork]) -> None:
        n = sum(len(w.values) for w in work)
        frame = pickle.dumps(
            {
                "version": work[0].version,
                "uri": work[0].uri,
                "values": [v for w in work for v in w.values],
                "ids": [i for w in work for i in w.ids],
                "from_store": [f for w in work for f in (w.from_store or [[] for _ in w.values])],
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        try:
            stdin = self._ensure_child()
            stdin.write(_HEADER.pack(len(frame)) + frame)
            stdin.flush()
            self.sent += n
        except OSError as exc:  # the child died (or could not start): shed, restart next time
            log.warning("shadow scorer lost %d records (%s); restarting it", n, exc)
            if self._child is not None:  # a broken pipe: make sure it is dead (reaped and
                self._child.kill()  # counted as a restart when the next records come)
            with self._lock:
                self.skipped += n
        finally:
            with self._lock:
                self.pending -= n

    def _ensure_child(self) -> IO[bytes]:
        child = self._child
        if child is None or child.poll() is not None:
            if child is not None:
                self.restarts += 1
                log.warning("shadow scorer (pid %d) exited with %s; restarting it", child.pid,
                            child.returncode)  # fmt: skip
                self._child = None
            # a child that dies at start (a bad environment) is not respawned per frame
            if time.monotonic() - self._started_at < RESTART_BACKOFF_SECONDS:
                raise OSError("shadow scorer restarted too recently; records shed")
            self._started_at = time.monotonic()
            root = str(Path(__file__).resolve().parents[1])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            child = subprocess.Popen(
                [sys.executable, "-m", "serving.shadow"],
                stdin=subprocess.PIPE,
                env=env,
            )
            self._child = child
            log.info("shadow scorer started (pid %d)", child.pid)
        assert child.stdin is not None
        return child.stdin


# ---------------------------------------------------------------------- the child


def _frames(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The frames on the stream until it ends (a cut last frame is dropped)."""
    while header := stream.read(_HEADER.size):
        if len(header) < _HEADER.size:
            return
        body = stream.read(_HEADER.unpack(header)[0])
        if len(body) < _HEADER.unpack(header)[0]:
            return
        yield pickle.loads(body)


def _step_aside() -> None:
    """Run only on CPU time the workers leave idle: SCHED_IDLE where the kernel has it (a
    waking request thread preempts the child at once), else the lowest niceness."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def main() -> None:
    """Score and log the frames a worker sends until its end of the pipe closes."""
    from ctloop.redact import RedactingFilter

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ends when the worker's pipe closes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [shadow %(process)d] %(message)s")
    for handler in logging.getLogger().handlers:  # URLs with passwords never reach the log
        handler.addFilter(RedactingFilter())
    from ctloop.core.predictor import Predictor
    from ctloop.features.records import model_rows
    from ctloop.features.view import load_view
    from ctloop.predlog.store import SHADOW_ROLE, SHADOW_SUFFIX, PredictionLog
    from ctloop.registry import Registry
    from ctloop.settings import get_settings
    from ctloop.store.dates import utc_now
    from ctloop.store.features import FeatureStore
    from serving.config import ServingConfig
    from serving.logrows import answers_of, log_rows, log_writer

    settings = get_settings()
    config = ServingConfig()
    view = load_view(config.view_name(settings))
    Registry.from_settings(settings).activate()
    store = FeatureStore.from_settings(settings)
    writer = log_writer(view, store, PredictionLog(store).write, config,
                        config.resolved_state_dir(settings))  # fmt: skip
    models: dict[str, Predictor] = {}
    _step_aside()  # after the start-up work, which ran at the worker's own priority
    try:
        for frame in _frames(sys.stdin.buffer):
            version = frame["version"]
            try:
                if version not in models:
                    models.clear()  # one trial at a time: the older one has ended
                    models[version] = Predictor.load(view, frame["uri"], version)
                values = frame["values"]
                start = time.perf_counter()
                output = models[version].answer(model_rows(view, values), thread_count=1)
                latency = (time.perf_counter() - start) * 1000 / len(values)
                writer.submit_many(log_rows(
                    view, version, values, [f"{i}{SHADOW_SUFFIX}" for i in frame["ids"]],
                    answers_of(view, output), latency, utc_now(), frame["from_store"],
                    role=SHADOW_ROLE,
                ))  # fmt: skip
            except Exception:  # a challenger's failure is its trial's problem
                log.exception("shadow scoring by version %s failed", version)
    finally:
        writer.close()
        store.dispose()


if __name__ == "__main__":
    main()
