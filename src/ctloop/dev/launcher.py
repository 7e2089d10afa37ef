"""One way to run a server process for a while: the demo, the tests and the benchmarks.

Every developer tool that needs a real `bentoml serve` (or another HTTP server) for the
length of a run starts it the same way: in a session of its own (so the server and every
worker it forks form one process group that can be stopped whole), with its output in one
log file, waiting for a readiness path with a deadline, and stopped with SIGTERM to the
server (which lets BentoML drain and flush the prediction log) and SIGKILL to the whole
group if it does not go in time. A server that dies or never gets ready raises an error
that carries the tail of its log, because that is where the reason is.

The long-running local stack (`ctloop.dev.stack`) is supervised by circus instead; it
shares the serving command line, the port check and the log tail from here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from ctloop.errors import CtloopError

logger = logging.getLogger(__name__)

SERVICE_TARGET = "serving.service:ModelService"
READY_TIMEOUT = 240.0
STOP_TIMEOUT = 60.0

Ready = Callable[[str], bool]
"""A readiness check: given the server's base URL, whether it serves now."""


class ServerNotReadyError(CtloopError):
    """A server exited or did not become ready; the message holds its log's tail."""


def _stat(pid: int | str) -> list[str] | None:
    """A process's /proc stat fields after its command (state, ppid, ...); None: gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot; None: gone or unreadable)."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def descendants(root: int) -> dict[int, int]:
    """Every live process below `root` (children, theirs, ...), with its start time, read
    from /proc through parent links (empty where there is no /proc)."""
    procs: dict[int, tuple[int, int]] = {}  # pid -> (ppid, start time)
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields is not None:
            procs[int(entry.name)] = (int(fields[1]), int(fields[19]))
    out: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in procs.items():
            if ppid == parent and pid not in out:
                out[pid] = started
                frontier.append(pid)
    return out


def processes_named(*names: str) -> list[int]:
    """The live processes whose command name is one of `names`: a server this process did
    not start, e.g. MariaDB, whose CPU a benchmark reads."""
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in names]


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the live processes among `pids` have used."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick), for a server started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def local_host(host: str) -> str:
    """Where this machine reaches a server bound to `host` (a wildcard bind is loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def port_in_use(host: str, port: int) -> bool:
    """Whether something already answers on the port (a refusal beats a confusing crash)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((local_host(host), port)) == 0


def tail(path: Path | str, lines: int = 40) -> str:
    """The last lines of a log file, for error messages that must say why."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def bentoml_command(
    port: int, host: str = "127.0.0.1", target: str = SERVICE_TARGET,
    working_dir: Path | None = None,
) -> list[str]:  # fmt: skip
    """`bentoml serve` of the prediction service (or a built Bento's tag) with this venv's
    Python, so no PATH lookup can pick another installation."""
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", host,
               "--port", str(port)]  # fmt: skip
    if working_dir is not None:
        command += ["--working-dir", str(working_dir)]
    return command


def path_answers(path: str) -> Ready:
    """Ready when GET `path` answers 200 (BentoML's /readyz, MLflow's /ping)."""

    def ready(url: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}{path}", timeout=2).status_code == 200
        return False

    return ready


def every_worker_loaded(workers: int) -> Ready:
    """Ready when /readyz is 200 and `workers` workers each serve a model.

    /readyz answers for the worker that took the connection only; under load another one
    can still be loading. Each worker sets its own `ctloop_model_version` sample on
    /metrics once its first model is in, so counting those counts loaded workers.
    """
    readyz = path_answers("/readyz")

    def ready(url: str) -> bool:
        if not readyz(url):
            return False
        with contextlib.suppress(httpx.HTTPError):
            metrics = httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
            return sum(m.startswith("ctloop_model_version{") for m in metrics) >= workers
        return False

    return ready


class Server:
    """A server process in its own session, with one log file; a context manager.

    `start()` and `wait_ready()` are separate so a caller can start several servers and
    let them load side by side before waiting for each; `with Server(...) as s:` does
    both and always stops it.
    """

    def __init__(
        self, command: list[str], env: Mapping[str, str], port: int, log_path: Path,
        cwd: Path, host: str = "127.0.0.1", ready: Ready | None = None,
        ready_timeout: float = READY_TIMEOUT, stop_timeout: float = STOP_TIMEOUT,
    ) -> None:  # fmt: skip
        """`command` already names `port`; `ready` defaults to /readyz answering 200;
        `stop_timeout` is how long SIGTERM gets before the group is killed."""
        self.command = list(command)
        self.env = dict(env)
        self.port = port
        self.url = f"http://{local_host(host)}:{port}"
        self.log_path = log_path
        self.cwd = cwd
        self.ready = ready or path_answers("/readyz")
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The server's process (its pid is also its session and group id)."""
        if self._proc is None:
            raise CtloopError(f"{self.command[0]} was never started")
        return self._proc

    def start(self) -> Server:
        """Start the process (log truncated); returns self for chaining."""
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the fd
            self._stopped = False
            self._proc = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        logger.info("started %s (pid %d), log %s", " ".join(self.command), self.proc.pid,
                    self.log_path)  # fmt: skip
        return self

    def tail(self, lines: int = 60) -> str:
        """The last lines of the server's log."""
        return tail(self.log_path, lines)

    def wait_ready(self, timeout: float | None = None, ready: Ready | None = None) -> None:
        """Until the readiness check passes; raises with the log tail if the server exits
        or the deadline passes, so a failed start says why at once."""
        timeout = self.ready_timeout if timeout is None else timeout
        check = ready or self.ready
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise ServerNotReadyError(
                    f"{self.command[0]} exited with {code} before it was ready; "
                    f"log {self.log_path}:\n{self.tail()}"
                )
            if check(self.url):
                return
            time.sleep(1)
        raise ServerNotReadyError(
            f"{' '.join(self.command[:5])} was not ready after {timeout:.0f}s; "
            f"log {self.log_path}:\n{self.tail()}"
        )

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM to the server, SIGKILL to its group after `timeout`; its exit code.

        SIGTERM goes to the server alone: BentoML's arbiter stops its workers in order, and
        they flush the prediction log. Whatever of the group outlives the server (or the
        server, when stuck) is killed, and so is every process that descended from it when
        the signal went out: BentoML's arbiter (circus) and its workers run in process
        groups of their own, so killing the server's group alone once left them serving
        on with nobody to stop them. Nothing is left behind.
        """
        if self._proc is None or self._stopped:
            return None if self._proc is None else self._proc.returncode
        proc = self._proc
        timeout = self.stop_timeout if timeout is None else timeout
        self._stopped = True
        tree = descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop on SIGTERM in %.0fs; killing its group",
                               self.command[0], timeout)  # fmt: skip
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        for pid, started in tree.items():
            if _start_time(pid) == started:  # the same process still, not a reused pid
                logger.warning("process %d of the server outlived it; killing it", pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        return proc.returncode

    def __enter__(self) -> Server:
        """Start and wait until ready; stopped again if it never gets there."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        """Always stop; never swallow the error of the block."""
        self.stop()
