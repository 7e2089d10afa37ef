"""A view's own prediction log table (`<fv>_predictions`): log rows in typed columns.

The shared `prediction_log` keeps each row's features as one JSON text, which the server
stores and the monitor parses row by row. A view's typed table holds one column per
feature, so a row is about a third of the bytes and the monitor can let the database
count buckets (`predlog.summaries`). The row the service hands the writer is the same
for both layouts; this module turns it into columns and a read back into the frame the
JSON form gives (`PredictionLog.read`), so nothing above the log knows which table a row
is in.

The layout is read from the table itself (reflected once per process), not from the view:
a service started before `init-db` added a column writes what the table has, and a value
no column holds exactly goes to the `_extra` JSON column, so a row is never refused or
changed for its shape.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from ctloop.predlog.row import FROM_STORE, decode_json, encode_json
from ctloop.store import tables

FIXED = ("id", "request_id", "model_version", "role", "entity_id", "prediction", "latency_ms",
         "created_at", "from_store", tables.EXTRA, "probabilities")  # fmt: skip
EXACT_INTEGER = 2**53  # a double holds every integer up to this exactly
EVENT_DATE_LEN = 32


@dataclass(frozen=True)
class TypedLayout:
    """What a view's log table can hold: its numeric and text feature columns."""

    view_name: str
    table: sa.Table
    numeric: frozenset[str]
    text: dict[str, int]  # text column -> longest value it holds
    event_dates: tuple[str, ...]  # `_ed_<name>` columns (one, unless the name changed)
    blank: dict[str, None]  # the columns a row may leave empty, all NULL

    @classmethod
    def of(cls, view_name: str, table: sa.Table) -> TypedLayout:
        """The layout of a (reflected or defined) view log table."""
        numeric, text, dates = set(), {}, []
        for column in table.columns:
            name = column.name
            if name in FIXED:
                continue
            if name.startswith(tables.EVENT_DATE_PREFIX):
                dates.append(name)
            elif isinstance(column.type, sa.Float | sa.Numeric | sa.Integer):
                numeric.add(name)
            elif isinstance(column.type, sa.String):
                text[name] = column.type.length or 1 << 30
        blank = dict.fromkeys([*numeric, *text, *dates, "from_store"])
        return cls(view_name, table, frozenset(numeric), text, tuple(dates), blank)

    @property
    def columns(self) -> list[str]:
        """Every column a row fills (all but the id)."""
        return [c.name for c in self.table.columns if c.name != "id"]

    def flatten(self, row: dict[str, Any]) -> dict[str, Any]:
        """A log row (features as a dict or JSON text) as this table's columns."""
        out = {key: row.get(key) for key in ("request_id", "model_version", "role",
                                             "entity_id", "prediction", "latency_ms",
                                             "created_at")}  # fmt: skip
        probabilities = row.get("probabilities")
        out["probabilities"] = (
            probabilities if isinstance(probabilities, str) else encode_json(probabilities)
        )
        # every column in every row: the executemany path takes its columns from the first
        out.update(self.blank)
        features = row.get("features")
        if isinstance(features, str):
            with contextlib.suppress(ValueError, RecursionError):  # damaged: kept as it came
                features = decode_json(features)
        extra: dict[str, Any] = {}
        if not isinstance(features, dict):  # not a row the service writes: kept as it came
            extra[""] = features
            features = {}
        numeric, isfinite = self.numeric, math.isfinite
        for key, value in features.items():
            if type(value) is float and key in numeric and isfinite(value):  # most values
                out[key] = value
            elif self._fits(key, value):
                out[key] = float(value) if key in self.numeric and value is not None else value
            elif key == FROM_STORE and _names(value):
                out["from_store"] = ",".join(value)
            elif (column := tables.event_date_column(key)) in self.event_dates and (
                isinstance(value, str) and len(value) <= EVENT_DATE_LEN
            ):
                out[column] = value
            else:
                extra[key] = value
        out[tables.EXTRA] = encode_json(extra) if extra else None
        return out

    def _fits(self, key: str, value: Any) -> bool:
        """Whether `value` goes in column `key` and reads back exactly as it came."""
        if key in self.numeric:
            if value is None:
                return True
            if isinstance(value, bool):
                return False
            if isinstance(value, int):
                return abs(value) <= EXACT_INTEGER
            return isinstance(value, float) and math.isfinite(value)  # numpy's too
        if key in self.text:
            return value is None or (isinstance(value, str) and len(value) <= self.text[key])
        return False

    def expand(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows read from this table as the JSON form's reader gives them: one column per
        feature (and the sent event date under its own name, `from_store` for an online
        view), `_extra` values put back, one `proba_<class>` column per class."""
        if frame.empty:
            return frame
        frame = frame.copy()
        frame.insert(1, "feature_view", self.view_name)
        for column in self.event_dates:
            values = frame.pop(column)
            if values.notna().any():
                frame[column.removeprefix(tables.EVENT_DATE_PREFIX)] = values
        stored = frame.pop("from_store")
        if stored.notna().any():
            frame["from_store"] = stored.fillna("")
        extras = frame.pop(tables.EXTRA).dropna()
        if len(extras):
            found: dict[str, dict[Any, Any]] = {}  # column -> {row: value}
            for index, text in extras.items():
                for key, value in decode_json(text).items():
                    if key in FIXED or key == "feature_view":  # not a feature (kept stored)
                        continue
                    if key == FROM_STORE:
                        key, value = "from_store", ",".join(value) if _names(value) else ""
                    found.setdefault(key, {})[index] = value
            for key, values in found.items():  # one copy of a column, however many values
                if key in frame.columns:
                    column = frame[key].astype(object)
                else:
                    column = pd.Series(None, index=frame.index, dtype=object)
                for index, value in values.items():
                    column.at[index] = value
                frame[key] = column
        probs = pd.DataFrame([decode_json(s) for s in frame.pop("probabilities")],
                             index=frame.index)  # fmt: skip
        probs.columns = [f"proba_{c}" for c in probs.columns]
        return pd.concat([frame, probs], axis=1)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def rows_by_view(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A batch split by view, in order (a service writes one view; a replay may mix)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row.get("feature_view")), []).append(row)
    return out
