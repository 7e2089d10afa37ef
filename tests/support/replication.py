"""Two throwaway `mariadbd` processes in primary/replica replication, for the read-replica
tests: their own data folders and ports, the primary writing a row-based binary log, the
replica following it by GTID. Each starts in about a second (`mariadb-install-db`)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.dev.launcher import free_port

MARIADBD = "/usr/sbin/mariadbd"


@dataclass
class Server:
    """One mariadbd process and its server URL (no database)."""

    name: str
    folder: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    def execute(self, sql: str) -> list[dict[str, object]]:
        """Run one statement as root; its rows (none for a statement without)."""
        engine = sa.create_engine(f"{self.url}/", poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(sql))
                return [dict(r) for r in result.mappings()] if result.returns_rows else []
        finally:
            engine.dispose()

    def status(self, name: str) -> int:
        """A global status counter (e.g. `Rows_sent`)."""
        rows = self.execute(f"SHOW GLOBAL STATUS LIKE '{name}'")
        return int(str(rows[0]["Value"]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.is_file() else ""


def _start(root: Path, name: str, server_id: int, extra: list[str]) -> Server:
    folder = root / name
    folder.mkdir()
    install = subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={folder / 'data'}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True, text=True,
    )  # fmt: skip
    if install.returncode != 0:
        pytest.fail(f"mariadb-install-db failed for the {name}: {install.stderr[-2000:]}")
    port = free_port()
    proc = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={folder / 'data'}", f"--port={port}",
         f"--socket={folder / 'mariadbd.sock'}", f"--pid-file={folder / 'mariadbd.pid'}",
         f"--log-error={folder / 'error.log'}", "--bind-address=127.0.0.1", "--user=root",
         f"--server-id={server_id}", "--skip-grant-tables", "--innodb-buffer-pool-size=64M",
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = Server(name, folder, port, proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            server.execute("SELECT 1")
            return server
        except sa.exc.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"the {name} mariadbd did not start: {server.log_tail()}")
            time.sleep(0.1)


@dataclass
class Pair:
    """A primary and its replica."""

    primary: Server
    replica: Server

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Until the replica has applied everything the primary wrote so far."""
        target = str(self.primary.execute("SELECT @@gtid_binlog_pos AS pos")[0]["pos"])
        deadline = time.monotonic() + timeout
        while True:
            row = self.replica.execute(f"SELECT MASTER_GTID_WAIT('{target}', 1) AS waited")[0]
            if row["waited"] == 0:
                return
            if time.monotonic() > deadline:
                status = self.replica.execute("SHOW REPLICA STATUS")
                pytest.fail(f"replica did not catch up to {target}: {status}")


@contextlib.contextmanager
def mariadb_pair() -> Iterator[Pair]:
    """A primary with a binary log and a read-only replica following it, stopped and
    deleted afterwards."""
    if shutil.which("mariadb-install-db") is None:
        pytest.fail("mariadb-install-db is required (Debian's mariadb-server-core)")
    root = Path(tempfile.mkdtemp(prefix="ctloop-replication-"))
    started: list[Server] = []
    try:
        primary = _start(root, "primary", 1, ["--log-bin=binlog", "--binlog-format=ROW"])
        started.append(primary)
        replica = _start(root, "replica", 2, ["--read-only=1"])
        started.append(replica)
        replica.execute(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            "MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos"
        )
        replica.execute("START REPLICA")
        yield Pair(primary, replica)
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
