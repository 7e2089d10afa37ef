"""A read replica of the feature store for the large reads, and when not to trust it.

Training extracts and monitor windows read hundreds of thousands of rows; on a busy
primary they compete with ingestion and the prediction log's writes. With
`FEATURE_STORE_READ_URL` set, those reads go to a MariaDB/MySQL replica of the same
database. A replica is only as good as its replication: one that stopped, or fell
further behind than `CTLOOP_REPLICA_MAX_LAG_SECONDS`, would hand training and the monitor
an old picture of the data without saying so. So before reading, its lag is measured
(`SHOW REPLICA STATUS`, at most once per `recheck_seconds`), and a replica that is
unreachable, not replicating, stopped or too far behind is passed over for the primary,
with a warning that says why (once per change of state, not once per read).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL

from ctloop.errors import CtloopError, StoreUnavailableError
from ctloop.store.engine import MYSQL_DIALECTS, Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaState:
    """What the last lag check found: whether reads may go to the replica, and why."""

    usable: bool
    reason: str
    lag_seconds: float | None = None


class ReadReplica(Database):
    """A read-only copy of the store's database, used while it is caught up."""

    def __init__(
        self, url: str | URL, max_lag_seconds: float = 30.0, recheck_seconds: float = 5.0
    ) -> None:
        super().__init__(url)
        if self.dialect not in MYSQL_DIALECTS:
            raise CtloopError(
                f"FEATURE_STORE_READ_URL {self.safe_url}: read replicas are MariaDB/MySQL "
                "replicas (their lag is read from SHOW REPLICA STATUS); unset it to read "
                "from FEATURE_STORE_URL"
            )
        self.max_lag_seconds = max_lag_seconds
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._state: ReplicaState | None = None
        self._checked_at = float("-inf")

    def measure(self) -> ReplicaState:
        """Ask the replica how far behind it is (no caching)."""
        try:
            with self.connect() as conn:
                row = conn.execute(sa.text("SHOW REPLICA STATUS")).mappings().first()
        except StoreUnavailableError as exc:
            return ReplicaState(False, f"it is unreachable ({exc})")
        except sa.exc.SQLAlchemyError as exc:  # e.g. no REPLICA MONITOR privilege
            return ReplicaState(False, f"its lag cannot be read: {exc.__class__.__name__}: {exc}")
        if row is None:
            return ReplicaState(False, "it is not a replica (SHOW REPLICA STATUS is empty)")
        io, sql = row.get("Slave_IO_Running"), row.get("Slave_SQL_Running")
        if io != "Yes" or sql != "Yes":
            error = row.get("Last_IO_Error") or row.get("Last_SQL_Error") or "none"
            return ReplicaState(
                False, f"replication is stopped (IO thread: {io}, SQL thread: {sql}; "
                f"last error: {error})"
            )  # fmt: skip
        behind = row.get("Seconds_Behind_Master")
        if behind is None:
            return ReplicaState(False, "its lag is unknown (Seconds_Behind_Master is NULL)")
        lag = float(behind)
        if lag > self.max_lag_seconds:
            return ReplicaState(
                False, f"it is {lag:.0f} s behind, more than {self.max_lag_seconds:g} s", lag
            )
        return ReplicaState(True, f"{lag:.0f} s behind", lag)

    def state(self) -> ReplicaState:
        """The replica's state, measured again once `recheck_seconds` have passed."""
        with self._lock:
            now = time.monotonic()
            if self._state is not None and now - self._checked_at < self.recheck_seconds:
                return self._state
            found = self.measure()
            before, self._state, self._checked_at = self._state, found, now
        if before is None or before.usable != found.usable:
            if found.usable:
                log.info("reading from the replica %s (%s)", self.safe_url, found.reason)
            else:
                log.warning(
                    "reading from the primary, not the replica %s: %s",
                    self.safe_url, found.reason,
                )  # fmt: skip
        return found

    def usable(self) -> bool:
        """Whether the large reads may go to the replica now."""
        return self.state().usable


__all__ = ["ReadReplica", "ReplicaState"]
