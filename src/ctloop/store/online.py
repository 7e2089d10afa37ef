"""Online features: each entity's newest feature row, read for serving.

A request that carries only the entity key is answered from the same rows training reads,
so what serving feeds the model cannot drift from what the model learned on (the
training-serving skew of hand-built requests), and a caller that knows only a customer id
can use the model. The read goes to the primary (`Database.connect`, never the replica:
a freshly ingested row must be visible), one statement per batch over the table's
primary key (entity, event date). Each worker keeps what it read for at most the view's
`online.max_staleness_seconds`, unknown entities included, in a bounded LRU map: the
bound on how long a newly ingested row takes to reach serving.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ctloop.features.view import FeatureView
from ctloop.store import tables
from ctloop.store.engine import Database

READ_CHUNK = 500  # entity ids per statement (bound parameters stay far below any limit)


@dataclass(frozen=True)
class LatestRow:
    """An entity's newest feature row: its event date and each feature's value."""

    event_date: dt.date
    values: dict[str, Any]


class OnlineFeatures:
    """Newest feature rows by entity, with a per-process cache of bounded staleness."""

    def __init__(
        self, db: Database, view: FeatureView, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if view.online is None:
            raise ValueError(f"view {view.name} declares no `online` block")
        self.db, self.view, self.clock = db, view, clock
        self.policy = view.online
        self.table = tables.features_table(view, sa.MetaData())
        self._cache: OrderedDict[str, tuple[float, LatestRow | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # statements sent: what a test of the cache counts
        # MariaDB's DOUBLE comes back as Decimal: the model and the log get floats, as
        # from a request
        self._numeric = [f.is_numeric for f in view.features]

    def latest(self, entities: Sequence[str]) -> dict[str, LatestRow | None]:
        """Each entity's newest row (None: the store has none), from the cache while it is
        younger than `max_staleness_seconds`, else read again."""
        now = self.clock()
        found: dict[str, LatestRow | None] = {}
        wanted: list[str] = []
        with self._lock:
            for entity in dict.fromkeys(entities):
                cached = self._cache.get(entity)
                if cached is not None and now - cached[0] <= self.policy.max_staleness_seconds:
                    found[entity] = cached[1]
                    self._cache.move_to_end(entity)
                else:
                    wanted.append(entity)
        if not wanted:
            return found
        read = self._read(wanted)
        with self._lock:
            for entity in wanted:
                found[entity] = read.get(entity)
                self._cache[entity] = (now, found[entity])
                self._cache.move_to_end(entity)
            while len(self._cache) > self.policy.cache_entities:
                self._cache.popitem(last=False)
        return found

    def as_of(self, entity: str, day: dt.date) -> LatestRow | None:
        """The entity's newest row on or before `day`: what a request that names its event
        date is filled from (point in time, as training reads). Not cached: the rarer path."""
        t = self.table
        key, when = t.c[self.view.entity], t.c[self.view.event_date]
        query = (
            sa.select(key, when, *(t.c[n] for n in self.view.feature_names))
            .where(key == entity)
            .where(when <= day)
            .order_by(when.desc())
            .limit(1)
        )
        with self.db.connect() as conn:
            row = conn.execute(query).first()
        self.reads += 1
        return None if row is None else self._row(row)

    def _row(self, row: Sequence[Any]) -> LatestRow:
        """A result row (key, date, features...) as a LatestRow of floats and categories."""
        values = {
            name: float(v) if is_num and v is not None else v
            for name, v, is_num in zip(self.view.feature_names, row[2:], self._numeric, strict=True)
        }
        return LatestRow(_as_date(row[1]), values)

    def oldest_fresh_date(self, now: dt.datetime) -> dt.date:
        """The oldest event date still within the view's TTL at `now` (UTC)."""
        return (now - dt.timedelta(hours=self.policy.ttl_hours)).date()

    def _read(self, entities: Sequence[str]) -> dict[str, LatestRow]:
        """One statement per chunk: the rows whose event date is their entity's newest."""
        t = self.table
        key, day = t.c[self.view.entity], t.c[self.view.event_date]
        names = self.view.feature_names
        out: dict[str, LatestRow] = {}
        with self.db.connect() as conn:
            for at in range(0, len(entities), READ_CHUNK):
                chunk = list(entities[at : at + READ_CHUNK])
                newest = (
                    sa.select(key.label("k"), sa.func.max(day).label("d"))
                    .where(key.in_(chunk))
                    .group_by(key)
                    .subquery()
                )
                query = sa.select(key, day, *(t.c[n] for n in names)).join(
                    newest, sa.and_(key == newest.c.k, day == newest.c.d)
                )
                for row in conn.execute(query):
                    out[str(row[0])] = self._row(row)
                self.reads += 1
        # MariaDB's PAD SPACE collation matches "C1 " with the stored "C1": answer under
        # the id that was asked for
        for entity in entities:
            if entity not in out and entity.rstrip(" ") in out:
                out[entity] = out[entity.rstrip(" ")]
        return out


def _as_date(value: Any) -> dt.date:
    """A DATE column as a date (SQLite hands back what it stored)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
