"""One continuous-training run per feature view at a time, across the CLI and Airflow.

Three `ctloop train` at once used to train and register three versions of one training
set and promote two of them, so `previous` pointed at a twin and a rollback could no
longer reach the real previous champion. A run now holds a lease on its view: one row of
`ct_run_lock` in the feature store's database, the one place every worker of every
orchestrator shares (tasks may not share a filesystem, and MariaDB's `GET_LOCK` dies
with the session, while an Airflow run spans several task processes).

A second run does not wait: it fails at once, saying since when and by whom the view is
held, because a queued run would train on data the first run is about to promote a model
of, and the scheduler (or the person) can simply start it again. The holder that already
holds the lease takes it again (each Airflow task of one run, a retried task). A lease
ends when its holder releases it, when it expires (`LEASE`, the CT DAG's run timeout),
or, for a CLI run, when its process is gone from the same host (a `kill -9`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import os
import socket
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ctloop.errors import CtloopError
from ctloop.store.dates import utc_now
from ctloop.store.engine import Database
from ctloop.store.tables import CT_RUN_LOCK, ct_run_lock_table

log = logging.getLogger(__name__)

LEASE = dt.timedelta(hours=6)
"""How long a lease lasts without its holder taking it again: the CT DAG's dagrun_timeout,
so a run Airflow killed never holds its view longer than Airflow would have let it run."""


class CtRunInProgressError(CtloopError):
    """Another CT run of the same view holds the lease."""


def cli_holder() -> str:
    """The holder name of a CLI run: who, where, which process (a kill -9 is seen by pid)."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"


def airflow_holder(run_id: str) -> str:
    """The holder name of an Airflow DAG run: the same in each of its task processes."""
    return f"airflow:{run_id}"


def _now() -> dt.datetime:
    """Now to the second: a lease's times are compared as stored."""
    return utc_now().replace(microsecond=0)


def _process_gone(host: str | None, pid: int | None) -> bool:
    """Whether a lease's CLI process is known dead (same host, no such pid)."""
    if host != socket.gethostname() or not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class CtLock:
    """The CT run leases of one feature store database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = ct_run_lock_table(sa.MetaData())

    def _ensure_table(self) -> None:
        """Create the lease table on first use: stores made before it existed need no
        `init-db` for the lock to work (`init-db` creates it as well)."""
        with self.db.begin() as conn:
            self.table.create(conn, checkfirst=True)

    def acquire(self, view: str, holder: str, lease: dt.timedelta = LEASE) -> None:
        """Hold the view's lease, or raise CtRunInProgressError naming the holder."""
        self._ensure_table()
        t = self.table
        now = _now()
        pid = os.getpid() if holder.startswith("cli:") else None
        row = {"feature_view": view, "holder": holder, "host": socket.gethostname(),
               "pid": pid, "started_at": now, "expires_at": now + lease}  # fmt: skip
        try:
            with self.db.begin() as conn:
                conn.execute(sa.insert(t).values(**row))
            log.info("CT lease on %s taken by %s", view, holder)
            return
        except IntegrityError:
            pass  # held: by us (take it again), by a dead or expired holder, or by another
        with self.db.begin() as conn:
            current = conn.execute(sa.select(t).where(t.c.feature_view == view)).mappings().first()
        if current is None:  # released in between: try once more from the start
            return self.acquire(view, holder, lease)
        mine = current["holder"] == holder
        stale = current["expires_at"] <= now or _process_gone(current["host"], current["pid"])
        if not (mine or stale):
            raise CtRunInProgressError(
                f"a CT run for view {view} is in progress since "
                f"{current['started_at']:%Y-%m-%d %H:%M:%S} UTC ({current['holder']}); "
                "start this run again once it has finished (the lease expires at "
                f"{current['expires_at']:%Y-%m-%d %H:%M:%S} UTC if its holder dies)"
            )
        update = {"expires_at": now + lease} if mine else row
        with self.db.begin() as conn:
            taken = conn.execute(
                sa.update(t)
                .where(
                    t.c.feature_view == view,
                    t.c.holder == current["holder"],
                    t.c.started_at == current["started_at"],
                )
                .values(**update)
            ).rowcount
        if taken != 1:  # another run took the stale lease first
            return self.acquire(view, holder, lease)
        if not mine:
            log.warning(
                "CT lease on %s taken over from %s (started %s): %s",
                view, current["holder"], current["started_at"],
                "expired" if current["expires_at"] <= now else "its process is gone",
            )  # fmt: skip

    def release(self, view: str, holder: str) -> bool:
        """Give the lease back (only the holder's own); whether it was held."""
        self._ensure_table()
        t = self.table
        with self.db.begin() as conn:
            gone = conn.execute(
                sa.delete(t).where(t.c.feature_view == view, t.c.holder == holder)
            ).rowcount
        return gone == 1

    @contextlib.contextmanager
    def held(self, view: str, holder: str) -> Iterator[None]:
        """The lease for the duration of a block: released however the block ends."""
        self.acquire(view, holder)
        try:
            yield
        finally:
            self.release(view, holder)


__all__ = ["CT_RUN_LOCK", "LEASE", "CtLock", "CtRunInProgressError", "airflow_holder",
           "cli_holder"]  # fmt: skip
