"""Requests by entity: the features a record leaves out come from the feature store.

Only for a view with an `online` block. A record's features are what it sent; a feature
it left out (absent, not null) is taken from its entity's newest row in `<fv>_features`
when that row is within the view's TTL. Refusals name the record, the entity and why: a
left-out feature with no entity to look it up (422), an entity the store has no row of
(404), a newest row older than the TTL (422), a null sent for a feature that may not be
null (422). Nothing is ever filled with a default. The log row says which features came
from the store (`_from_store` in its features).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ctloop.features.schema import schema_of
from ctloop.features.view import FeatureView
from ctloop.predlog.store import FROM_STORE
from ctloop.store.dates import utc_now
from ctloop.store.online import OnlineFeatures

__all__ = ["FROM_STORE", "FillError", "OnlineFill"]


@dataclass(frozen=True)
class FillError(Exception):
    """A request online features cannot complete: HTTP status and the message."""

    status: int
    message: str


class OnlineFill:
    """Completes validated records of an online view from the store."""

    def __init__(self, view: FeatureView, features: OnlineFeatures) -> None:
        self.view, self.features = view, features
        self.required = {r.name for r in schema_of(view).features if not r.nullable}

    def complete(
        self, records: Sequence[BaseModel], batch: bool
    ) -> tuple[list[dict[str, Any]], list[list[str]]]:
        """Each record's values with the left-out features filled, and which were.

        A record without an entity key is what it would be offline: a left-out feature
        that may be null is null, one that may not is refused. With the entity key, the
        left-out features come from its newest row (on or before the event date, when the
        record sends one); the row's event date is recorded with the values, so the log
        joins the labels of the day the features describe.
        """
        view = self.view
        values = [r.model_dump() for r in records]
        absent: list[list[str]] = []
        for i, (record, vals) in enumerate(zip(records, values, strict=True)):
            sent = record.model_fields_set
            where = f"records[{i}]." if batch else ""
            for name in sorted(self.required & sent):
                if vals[name] is None:
                    raise FillError(
                        422,
                        f"{where}{name}: null is not allowed; leave the field out to take it "
                        "from the store",
                    )
            missing = [n for n in view.feature_names if n not in sent]
            if missing and vals.get(view.entity) is None:
                needed = [n for n in missing if n in self.required]
                if needed:
                    raise FillError(
                        422,
                        f"{where}{needed[0]}: field required (or send {view.entity} to take "
                        "the features left out from the store)",
                    )
                missing = []  # nullable ones: missing values, as without online features
            absent.append(missing)
        newest = [
            str(v[view.entity])
            for v, m in zip(values, absent, strict=True)
            if m and v.get(view.event_date) is None
        ]
        rows = self.features.latest(newest) if newest else {}
        oldest = self.features.oldest_fresh_date(utc_now())
        for i, (vals, missing) in enumerate(zip(values, absent, strict=True)):
            if not missing:
                continue
            entity = str(vals[view.entity])
            where = f"records[{i}]: " if batch else ""
            day = vals.get(view.event_date)
            row = rows.get(entity) if day is None else self.features.as_of(entity, day)
            if row is None:
                on = "" if day is None else f" on or before {day}"
                raise FillError(
                    404,
                    f"{where}{view.entity} '{entity}' has no feature rows{on} in the store "
                    f"({view.features_table})",
                )
            if day is not None:  # as of that day: fresh within the TTL before its end
                end = dt.datetime.combine(day, dt.time()) + dt.timedelta(days=1)
                fresh_from = self.features.oldest_fresh_date(end)
            else:
                fresh_from = oldest
            if row.event_date < fresh_from:
                raise FillError(
                    422,
                    f"{where}{view.entity} '{entity}': its newest feature row is from "
                    f"{row.event_date}, older than the view's TTL of "
                    f"{self.features.policy.ttl_hours:g} h"
                    + ("" if day is None else f" before {day}"),
                )
            for name in missing:
                vals[name] = row.values[name]
            vals[view.event_date] = row.event_date
        return values, absent
