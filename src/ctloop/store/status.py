"""What the feature store holds: rows per event date and how many have labels yet.

Read by `ctloop status`, the demo and the DAGs' checks; counts only, never rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from ctloop.features.view import FeatureView
from ctloop.store.dates import to_date
from ctloop.store.schema import StoreSchema


@dataclass(frozen=True)
class DayStatus:
    """Row counts of one event date: what `ctloop status` lists per day."""

    event_date: dt.date
    features: int
    labels: int

    @property
    def label_coverage(self) -> float:
        """Share of the day's feature rows whose label has landed (labels come late)."""
        return self.labels / self.features if self.features else 0.0


@dataclass(frozen=True)
class ViewStatus:
    """What the store holds for one view."""

    view: str
    exists: bool
    days: list[DayStatus]

    @property
    def feature_rows(self) -> int:
        """Feature rows over all days, the size `ctloop status` reports."""
        return sum(d.features for d in self.days)

    @property
    def label_rows(self) -> int:
        """Label rows over all days; fewer than feature rows while labels are late."""
        return sum(d.labels for d in self.days)


class StatusReads(StoreSchema):
    """The feature store's status counts (a part of `FeatureStore`)."""

    def status(self, view: FeatureView) -> ViewStatus:
        """Row counts per event date and how many of them have labels yet."""
        if not self.has_view_tables(view):
            return ViewStatus(view.name, False, [])
        ftable, ltable = self.view_tables(view)
        day = view.event_date
        fq = sa.select(ftable.c[day], sa.func.count()).group_by(ftable.c[day])
        lq = sa.select(ltable.c[day], sa.func.count()).group_by(ltable.c[day])
        with self.connect() as conn:
            fcounts = {to_date(d): n for d, n in conn.execute(fq)}
            lcounts = {to_date(d): n for d, n in conn.execute(lq)}
        days = [
            DayStatus(d, fcounts.get(d, 0), lcounts.get(d, 0))
            for d in sorted(set(fcounts) | set(lcounts))
        ]
        return ViewStatus(view.name, True, days)

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table in the store."""
        with self.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            out = {}
            for name in sorted(names):
                query = sa.select(sa.func.count()).select_from(sa.table(name))
                out[name] = conn.execute(query).scalar_one()
        return out
