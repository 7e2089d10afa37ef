"""The one server launcher (`ctloop.dev.launcher`) with a real, small HTTP server.

What the demo, the serving tests and the benchmarks rely on: ready on entry, an error
with the log's tail when the server dies or never gets ready, and nothing of its process
group left after the block, even when the server ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ctloop.dev.launcher import (
    Server,
    ServerNotReadyError,
    free_port,
    path_answers,
    port_in_use,
    processes_named,
)

# An HTTP server that ignores SIGTERM and leaves a child in its group: the worst case.
STUBBORN_SERVER = """
import http.server, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("serving", flush=True)
http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),
                 bind="127.0.0.1")
"""


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (a killed child may linger as a zombie)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
    return found


def test_a_server_is_ready_in_the_block_and_its_whole_group_gone_after(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-c", STUBBORN_SERVER, str(port)]
    server = Server(command, dict(os.environ), port, tmp_path / "server.log", tmp_path,
                    ready=path_answers("/"), ready_timeout=60, stop_timeout=3)  # fmt: skip
    with server:
        assert port_in_use("127.0.0.1", port)
        assert httpx.get(f"{server.url}/", timeout=5).status_code == 200
        pgid = server.proc.pid
        assert len(group_members(pgid)) == 2  # the server and its child
    assert server.stop() == server.proc.returncode  # stopping twice is harmless
    assert not group_members(pgid), "the server's process group outlived the block"
    assert not port_in_use("127.0.0.1", port)
    assert "serving" in server.tail()


# A server that exits on SIGTERM at once, leaving a child in a session (and process group)
# of its own that starts a grandchild: BentoML's arbiter and its workers, as circus runs them.
RUNAWAY_SERVER = """
import http.server, subprocess, sys
code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \\
       "'import time; time.sleep(600)']); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print("child", child.pid, flush=True)
http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),
                 bind="127.0.0.1")
"""


def test_processes_that_left_the_servers_group_are_stopped_with_it(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-c", RUNAWAY_SERVER, str(port)]
    server = Server(command, dict(os.environ), port, tmp_path / "server.log", tmp_path,
                    ready=path_answers("/"), ready_timeout=60, stop_timeout=3)  # fmt: skip
    with server:
        deadline = time.monotonic() + 30
        while len(below := psutil.Process(server.proc.pid).children(recursive=True)) < 2:
            assert time.monotonic() < deadline, below
            time.sleep(0.1)
        assert all(os.getpgid(p.pid) != server.proc.pid for p in below)  # out of its group
    _, alive = psutil.wait_procs(below, timeout=10)
    assert not alive, f"outlived the server: {alive}"


@pytest.mark.parametrize(
    ("code", "ready_timeout", "why", "logged"),
    [
        ("import sys; print('cannot load the model store', flush=True); sys.exit(3)", 60,
         "exited with 3", "cannot load the model store"),
        ("import time; print('still loading', flush=True); time.sleep(600)", 3,
         "not ready after 3s", "still loading"),
    ],
    ids=["dies", "never-ready"],
)  # fmt: skip
def test_a_server_that_fails_to_start_says_why_and_is_stopped(
    tmp_path: Path, code: str, ready_timeout: float, why: str, logged: str
) -> None:
    port = free_port()
    server = Server([sys.executable, "-c", code], dict(os.environ), port,
                    tmp_path / "server.log", tmp_path, ready_timeout=ready_timeout)  # fmt: skip
    with pytest.raises(ServerNotReadyError, match=why) as err, server:
        pass
    assert logged in str(err.value)  # the log's tail says why
    assert server.proc.poll() is not None  # stopped, also when it never got ready


def test_processes_are_found_by_their_command_name() -> None:
    own = psutil.Process().name()
    assert os.getpid() in processes_named("no-such-server", own)
    assert processes_named("no-such-server") == []
