"""A batch of prediction requests checked a column at a time and handed to the model whole.

The request model (`ctloop.features.records.record_model`) validates a 1,000-record batch
one record at a time, about 5 µs a record with its dump another 1.3, and the model then
read the records as lists, which CatBoost converts row by row (4 µs a record, against 1 on
a typed frame). Here a JSON-decoded batch is checked one feature column at a time by the
same rules (`FeatureRule.request_column`) and becomes the model's typed frame directly.

Only the plain case is taken: every record an object of known fields, numbers as JSON
numbers, categories as strings, the event date as YYYY-MM-DD. At the first doubt (a bad
value, an unknown field, a date written another way) `checked_batch` returns None and
the caller validates with the request model, which stays the one judge of what is
refused and the one source of the 400's wording. So this path may pass a batch to the
request model that the model then accepts, but it never accepts a batch the model would
refuse and never gives other values than it would (`tests/unit/test_columnar.py` holds
the two to that on generated batches).
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Iterator, Sequence
from types import NoneType
from typing import Any, overload

import numpy as np
import orjson
import pandas as pd

from ctloop.features.records import ENTITY_INT_MAX
from ctloop.features.schema import schema_of
from ctloop.features.spec import ENTITY_LEN
from ctloop.features.view import FeatureView

_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ColumnarBatch(Sequence[dict[str, Any]]):
    """Validated records twice over: `columns`, each field's values as the request model
    dumps them, and `frame`, typed as the model was trained on them. As a sequence it is
    the records' dumps, what the log, the shadow and the canary read; those dicts are
    built on first use, so an unlogged service never pays for them."""

    def __init__(self, columns: dict[str, list[Any]], frame: pd.DataFrame) -> None:
        self.columns = columns
        self.frame = frame
        self._values: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def values(self) -> list[dict[str, Any]]:
        """One dict per record, fields in the request model's order, as it dumps them."""
        if self._values is None:
            self._values = self._dicts(slice(None))
        return self._values

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if self._values is not None or isinstance(index, int):
            return self.values[index]
        return self._dicts(index)  # a slice: only its records built

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.values)

    def _dicts(self, index: slice) -> list[dict[str, Any]]:
        names = list(self.columns)
        rows = zip(*(column[index] for column in self.columns.values()), strict=True)
        return [dict(zip(names, row, strict=True)) for row in rows]


SPLIT_KEYS = frozenset({"columns", "data"})
"""A batch in the split form: field names once, then one list of values per record
(pandas' `orient="split"`, MLflow's `dataframe_split` without its wrapper)."""


class SplitShapeError(ValueError):
    """A split body whose shape is wrong, with where (`loc`, as in a validation error)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(f"{'.'.join(map(str, loc))}: {message}")
        self.loc = loc
        self.message = message


def split_records(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The records a split body holds, one dict per row; a column left out is a field each
    record leaves out. SplitShapeError names what is wrong with the body's shape (serving
    answers it as a 400 at that location; the values themselves are judged as records)."""
    columns, data = document.get("columns"), document.get("data")
    problem = _shape_problem(columns, data)
    if problem is not None:
        raise problem
    return [dict(zip(columns, row, strict=True)) for row in data]


def _shape_problem(columns: Any, data: Any) -> SplitShapeError | None:
    """What is wrong with a split body's shape (the first thing), or None: the one rule
    `split_records` reports and the columnar check declines on."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        return SplitShapeError(("columns",), "a list of field names is expected")
    if len(set(columns)) != len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        return SplitShapeError(("columns",), f"{', '.join(map(repr, twice))} named more than once")
    if not isinstance(data, list):
        return SplitShapeError(
            ("data",), "a list of rows (one list of values per record) is expected"
        )
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            got = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            return SplitShapeError(("data", i), f"{got} for {len(columns)} columns")
    return None


def checked_batch(view: FeatureView, body: bytes, max_records: int) -> ColumnarBatch | None:
    """`{"records": [...]}` or `{"columns": [...], "data": [[...], ...]}` decoded and
    checked, or None when the request model must judge it (anything but the plain case,
    including every invalid body)."""
    if view.online is not None:  # features left out come from the store: the model fills
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    if document.keys() == SPLIT_KEYS:
        return _checked_split(view, document["columns"], document["data"], max_records)
    if document.keys() != {"records"}:
        return None
    records = document["records"]
    if type(records) is not list or not 1 <= len(records) <= max_records:
        return None
    return checked_records(view, records)


def checked_records(view: FeatureView, records: Sequence[Any]) -> ColumnarBatch | None:
    """JSON-decoded records checked column by column, or None (see `checked_batch`)."""
    rules = schema_of(view).features  # cheap: a few objects per batch
    fields = (view.entity, view.event_date, *(r.name for r in rules))  # the model's order
    known = frozenset(fields)
    for record in records:
        if type(record) is not dict or not record.keys() <= known:
            return None
    entities = [r.get(view.entity) for r in records]
    days = [r.get(view.event_date) for r in records]
    return _checked(view, rules, entities, days, _feature_columns(records, fields[2:]))


def _checked_split(
    view: FeatureView, columns: Any, data: Any, max_records: int
) -> ColumnarBatch | None:
    """A split body checked as `checked_records` checks records, without a dict per
    record: its rows are transposed into columns in one C-level pass."""
    if _shape_problem(columns, data) is not None or not 1 <= len(data) <= max_records:
        return None
    rules = schema_of(view).features
    fields = (view.entity, view.event_date, *(r.name for r in rules))
    if not set(columns) <= set(fields):
        return None
    by_name = dict(zip(columns, map(list, zip(*data, strict=True)), strict=True))
    n = len(data)

    def column(name: str) -> list[Any]:  # a column left out: each record leaves it out
        return by_name.get(name) or [None] * n

    return _checked(view, rules, column(view.entity), column(view.event_date),
                    [column(name) for name in fields[2:]])  # fmt: skip


def _checked(
    view: FeatureView,
    rules: Sequence[Any],
    entities: list[Any],
    days: list[Any],
    feature_columns: list[list[Any]],
) -> ColumnarBatch | None:
    parsed = _days(days)
    if not _entities_ok(entities) or parsed is None:
        return None
    dumped: dict[str, list[Any]] = {view.entity: entities, view.event_date: parsed}
    model: dict[str, np.ndarray] = {}
    for rule, column in zip(rules, feature_columns, strict=True):
        checked = rule.request_column(column)
        if checked is None:
            return None
        dumped[rule.name], model[rule.name] = checked
    return ColumnarBatch(dumped, pd.DataFrame(model, copy=False))


def _feature_columns(records: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    """Each named field's values over the records (None where left out): one C-level
    item lookup per record when every record sends every field, the usual case."""
    if not names:
        return []
    getter = operator.itemgetter(*names)
    try:
        rows = [getter(r) for r in records]
    except KeyError:  # a nullable feature left out somewhere
        return [[r.get(name) for r in records] for name in names]
    if len(names) == 1:
        return [rows]
    return [list(column) for column in zip(*rows, strict=True)]


def _entities_ok(entities: list[Any]) -> bool:
    """Entity ids the request model takes as they are: text of 1 to ENTITY_LEN characters
    or an integer whose text fits, or null."""
    kinds = set(map(type, entities))
    if not kinds <= {str, int, NoneType}:
        return False
    if str in kinds and any(type(e) is str and not 1 <= len(e) <= ENTITY_LEN for e in entities):
        return False
    return int not in kinds or all(
        -ENTITY_INT_MAX <= e <= ENTITY_INT_MAX for e in entities if type(e) is int
    )


def _days(days: list[Any]) -> list[dt.date | None] | None:
    """Event dates written YYYY-MM-DD (or null) as dates; None for any other form."""
    out: list[dt.date | None] = []
    parsed: dict[str, dt.date] = {}  # a batch usually holds a few distinct days
    for day in days:
        if day is None:
            out.append(None)
            continue
        if type(day) is not str:
            return None
        value = parsed.get(day)
        if value is None:
            if not _ISO_DAY.fullmatch(day):
                return None
            try:
                value = parsed[day] = dt.date.fromisoformat(day)
            except ValueError:
                return None
        out.append(value)
    return out
