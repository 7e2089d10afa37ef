"""The stack's processes under circus: `circusd --daemon`, driven over its control socket.

Why circus rather than a hand-written supervisor or honcho: `make up` must start the
services detached and return, `make up` again must start only what is not running,
`make stack-status` must ask what runs, and `make down` must stop everything. circusd is a
daemon that keeps each service (a "watcher") in a session of its own, answers `list`,
`add`, `rm` and `quit` on a control socket, and stops a watcher with SIGTERM to the
process and its children, then SIGKILL after `graceful_timeout`. honcho runs in the
foreground, stops every process when one exits and cannot be asked what runs. circus is
the kantoku distribution, the maintained fork BentoML itself runs its workers under.

One daemon per state folder: its pid file, configuration and control sockets live in
`<state>/run` (Unix sockets: no TCP port taken on a shared machine, no multicast), its
log in `<state>/logs/circusd.log`. Watchers are added with the full command line and
environment of the moment (over JSON, so no value is reparsed) and removed when stopped.
A service that dies is started again by circusd (its pid changes, which is how `up`
tells a service that crashed while starting); this is also why they must be respawned:
kantoku's arbiter quits, taking every service with it, when a watcher has no process.

After circusd quits, whatever is left of a service's session (an Airflow task process
whose supervisor died first, say) is killed, so `down` leaves nothing running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from circus.client import CircusClient
from circus.exc import CallError

from ctloop.dev.launcher import tail
from ctloop.errors import CtloopError

logger = logging.getLogger(__name__)

# circusd's answer while its arbiter is busy with another command (circus.util.synchronized)
ARBITER_BUSY = "arbiter is already running"
BUSY_RETRY_SECONDS = 0.2
UNIX_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass(frozen=True)
class Watcher:
    """One service as circusd runs it: command line, whole environment, folder, log."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path


def session_processes(sid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a session: a service and everything it started.

    A session, not only the process group: Airflow's task supervisors put themselves in
    process groups of their own, but they stay in the scheduler's session.
    """
    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def kill_sessions(sessions: dict[str, int], timeout: float = 10) -> list[str]:
    """SIGKILL whatever is left of each session; the names that had something left."""
    left = [name for name, sid in sessions.items() if session_processes(sid)]
    deadline = time.monotonic() + timeout
    pending = list(left)
    while pending and time.monotonic() < deadline:
        for name in pending:  # again and again: a process may fork while we look
            for proc in session_processes(sessions[name]):
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
        time.sleep(0.2)
        pending = [name for name in pending if session_processes(sessions[name])]
    if pending:
        raise CtloopError(
            "could not stop " + ", ".join(f"{n} (session {sessions[n]})" for n in pending)
        )
    return left


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def socket_dir(run_dir: Path) -> Path:
    """Where circusd's control sockets go: the state folder's `run`, or, where that path is
    too long for a Unix socket (108 bytes; a deep checkout or test folder), a private
    folder in the temporary directory named from the state folder's path, so every later
    `up`, `status` and `down` of that folder finds the same sockets."""
    if len(str(run_dir / "circus-events.sock")) <= UNIX_SOCKET_PATH_MAX:
        return run_dir
    digest = hashlib.sha256(str(run_dir.absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ctloop-circus-{os.getuid()}-{digest}"


class Supervisor:
    """circusd for one state folder: start it, add and remove services, ask, quit."""

    def __init__(self, run_dir: Path, log_path: Path, stop_timeout: float) -> None:
        """`stop_timeout`: how long a service gets after SIGTERM before SIGKILL."""
        self.run_dir = run_dir
        self.config_path = run_dir / "circus.ini"
        self.pidfile = run_dir / "circusd.pid"
        self.socket_dir = socket_dir(run_dir)
        self.endpoint = f"ipc://{self.socket_dir / 'circus.sock'}"
        self.pubsub_endpoint = f"ipc://{self.socket_dir / 'circus-events.sock'}"
        self.log_path = log_path
        self.stop_timeout = stop_timeout

    # ---- the daemon

    def daemon_pid(self) -> int | None:
        """The pid of circusd when this folder's daemon runs (a recycled pid is not taken
        for it)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            # circusd retitles itself "circusd"; its pid file sits in our folder only
            return pid if "circusd" in " ".join(proc.cmdline()) else None
        except (OSError, ValueError, psutil.Error):
            return None

    def _config(self) -> str:
        return "\n".join([
            "[circus]",
            f"endpoint = {self.endpoint}",
            f"pubsub_endpoint = {self.pubsub_endpoint}",
            "multicast_endpoint =",  # no UDP discovery socket on 0.0.0.0
            "statsd = False",
            "check_delay = 1",
            "",
        ])  # fmt: skip

    def start_daemon(self, timeout: float = 60) -> int:
        """Start circusd (detached) unless it runs; its pid once it answers."""
        running = self.daemon_pid()
        if running is not None:
            return running
        longest = max(len(self.endpoint), len(self.pubsub_endpoint)) - len("ipc://")
        if longest > UNIX_SOCKET_PATH_MAX:  # a temporary folder deeper than the limit too
            raise CtloopError(
                f"the stack's state folder {self.run_dir.parent} is too deep for circusd's "
                "control socket; set CTLOOP_STACK_STATE_DIR to a shorter path"
            )
        for folder in {self.run_dir, self.socket_dir}:
            folder.mkdir(parents=True, exist_ok=True)
            if folder.stat().st_uid != os.getuid():  # a name taken in the shared /tmp
                raise CtloopError(
                    f"{folder} (circusd's control sockets for {self.run_dir}) belongs to "
                    "another user; set CTLOOP_STACK_STATE_DIR to a shorter path"
                )
            folder.chmod(0o700)  # the control socket starts and stops processes
        self.config_path.write_text(self._config())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        circusd = Path(sys.executable).with_name("circusd")  # this venv's, no PATH lookup
        subprocess.run(
            [str(circusd), "--daemon", "--pidfile", str(self.pidfile), "--log-level", "info",
             "--log-output", str(self.log_path), str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=timeout, check=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.daemon_pid()
            if pid is not None:
                with contextlib.suppress(CtloopError):
                    self._call("list", timeout=2)
                    logger.info("circusd started (pid %d), control %s", pid, self.endpoint)
                    return pid
            time.sleep(0.2)
        raise CtloopError(
            f"circusd did not answer on {self.endpoint} after {timeout:.0f}s; "
            f"log {self.log_path}:\n{tail(self.log_path)}"
        )

    def _call(self, command: str, timeout: float = 10, **props: Any) -> dict[str, Any]:
        """One command to circusd. The arbiter runs one command at a time and refuses
        another while one is in progress ("arbiter is already running watcher_start
        command", e.g. still starting the service added just before): that refusal is
        asked again until `timeout`, every other one raises."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self._call_once(command, timeout, props)
            busy = ARBITER_BUSY in str(answer.get("reason", ""))
            if answer.get("status") == "ok" or not busy or time.monotonic() >= deadline:
                break
            time.sleep(BUSY_RETRY_SECONDS)
        if answer.get("status") != "ok":
            raise CtloopError(f"circusd refused {command} {props.get('name', '')}: "
                              f"{answer.get('reason')}")  # fmt: skip
        return answer

    def _call_once(self, command: str, timeout: float, props: dict[str, Any]) -> dict[str, Any]:
        client = CircusClient(endpoint=self.endpoint, timeout=timeout)
        try:
            return dict(client.call({"command": command, "properties": props}))
        except CallError as exc:
            raise CtloopError(
                f"circusd on {self.endpoint} did not answer {command}: {exc}"
            ) from exc
        finally:
            client.stop()

    # ---- services

    def watchers(self) -> list[str]:
        """The services circusd knows (running or not)."""
        if self.daemon_pid() is None:
            return []
        return [str(name) for name in self._call("list")["watchers"]]

    def pid(self, name: str) -> int | None:
        """The live process of a service (its pid is its session id), or None."""
        if name not in self.watchers():
            return None
        live = [int(p) for p in self._call("list", name=name)["pids"] if _alive(int(p))]
        return live[0] if live else None

    def running(self) -> dict[str, int]:
        """Every service with a live process: name to pid."""
        found = {}
        for name in self.watchers():
            pid = self.pid(name)
            if pid is not None:
                found[name] = pid
        return found

    def command(self, name: str) -> list[str]:
        """The command line circusd starts a service with."""
        options = self._call("options", name=name)["options"]
        args = options.get("args") or []
        return [*shlex.split(options["cmd"]), *(shlex.split(args) if isinstance(args, str)
                                                else args)]  # fmt: skip

    def env(self, name: str) -> dict[str, str]:
        """The environment circusd starts a service with (empty when it does not say)."""
        return dict(self._call("options", name=name)["options"].get("env") or {})

    def start(self, watcher: Watcher) -> int:
        """(Re)define a service with this command line and environment and start it.

        A service circusd already knows (stopped, or crashed) is removed first, so what
        starts is always today's configuration. Returns the service's pid.
        """
        if watcher.name in self.watchers():
            self._call("rm", name=watcher.name, waiting=True, timeout=self.stop_timeout + 30)
        with watcher.log.open("ab") as log:
            stamp = dt.datetime.now().isoformat(timespec="seconds")
            log.write(f"\n===== {stamp} ctloop stack: {shlex.join(watcher.command)}\n".encode())
        stream = {"class": "FileStream", "filename": str(watcher.log)}
        options = {
            "working_dir": str(watcher.cwd), "env": watcher.env, "copy_env": False,
            "stdout_stream": stream, "stderr_stream": dict(stream),
            "stop_signal": int(signal.SIGTERM), "stop_children": True,
            "graceful_timeout": self.stop_timeout, "respawn": True,
        }  # fmt: skip
        self._call("add", name=watcher.name, cmd=shlex.quote(watcher.command[0]),
                   args=watcher.command[1:], start=True, options=options)  # fmt: skip
        pid = self.pid(watcher.name)
        if pid is None:
            raise CtloopError(f"{watcher.name} exited at once; log {watcher.log}:\n"
                              f"{tail(watcher.log)}")  # fmt: skip
        return pid

    def remove(self, names: list[str]) -> list[str]:
        """Stop and forget these services (SIGTERM, SIGKILL after the stop timeout); the
        names whose sessions still had processes to kill afterwards."""
        sessions = {name: pid for name in names if (pid := self.pid(name)) is not None}
        for name in names:
            if name in self.watchers():
                self._call("rm", name=name, waiting=True, timeout=self.stop_timeout + 30)
        return kill_sessions(sessions)

    def quit(self) -> list[str]:
        """Stop every service, then circusd; the names whose sessions had leftovers killed."""
        daemon = self.daemon_pid()
        if daemon is None:
            return []
        sessions = self.running()
        self._call("quit", waiting=True, timeout=self.stop_timeout + 30)
        deadline = time.monotonic() + self.stop_timeout + 30
        while _alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(daemon):
            raise CtloopError(f"circusd (pid {daemon}) did not exit; log {self.log_path}:\n"
                              f"{tail(self.log_path)}")  # fmt: skip
        return kill_sessions(sessions)
