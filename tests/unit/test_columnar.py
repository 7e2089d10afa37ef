"""The batch endpoint's column-at-a-time check against the request model it stands in for.

`ctloop.core.columnar` may hand a batch back to the request model (None), but it must
never accept a record that model refuses, and what it accepts must be exactly what the
model would give: the same dumped values with the same types, and the model frame
`to_model_frame` builds from them. Hypothesis generates batches mixing valid values with
every kind of wrong one (type, range, whole number, category, length, null, unknown and
missing fields, dates written other ways) and holds the two to that; the plain batches a
client sends must take the fast path, or the path would be dead code passing the test.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ctloop.core.columnar import ColumnarBatch, checked_batch, split_records
from ctloop.core.predictor import to_model_frame
from ctloop.features.records import ENTITY_INT_MAX, example_record, record_model
from ctloop.features.schema import FeatureRule, schema_of
from ctloop.features.spec import CATEGORY_LEN, ENTITY_LEN
from ctloop.features.view import FeatureView, load_view_file
from tests.support.serving import records

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "views").glob("*.yaml"))

WRONG = st.one_of(
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=1),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)


def valid_values(rule: FeatureRule) -> st.SearchStrategy[Any]:
    """Values the request model takes for this feature."""
    if rule.numeric:
        feature = rule.feature
        low = feature.min if feature.min is not None else -1e6
        high = feature.max if feature.max is not None else 1e6
        valid = st.integers(int(low), int(high))
        if not feature.integer:
            valid = st.one_of(valid, st.floats(low, high, allow_nan=False))
    else:
        valid = st.sampled_from(rule.categories)
    return st.one_of(valid, st.none()) if rule.nullable else valid


def wrong_values(rule: FeatureRule) -> st.SearchStrategy[Any]:
    """Values on or past the edge of what the request model takes (some still valid)."""
    if rule.numeric:
        feature = rule.feature
        low = feature.min if feature.min is not None else -1e6
        high = feature.max if feature.max is not None else 1e6
        edges = st.sampled_from([low, high, low - 1, high + 1, low - 1e-9, high + 0.5, 0.5,
                                 1e308, -0.0, 2**63])  # fmt: skip
        return st.one_of(edges, st.none(), WRONG, st.floats())
    odd = st.sampled_from(["", "x" * CATEGORY_LEN, "x" * (CATEGORY_LEN + 1), "unseen", "é"])
    return st.one_of(odd, st.none(), WRONG)


ENTITIES = st.one_of(
    st.text(min_size=1, max_size=8),
    st.sampled_from(["", "0042", "x" * ENTITY_LEN, "x" * (ENTITY_LEN + 1)]),
    st.integers(-ENTITY_INT_MAX - 1, ENTITY_INT_MAX + 1),
    st.sampled_from([ENTITY_INT_MAX, -ENTITY_INT_MAX, 2**63, True, 1.5]),
    st.none(),
)
DAYS = st.one_of(
    st.dates(dt.date(1900, 1, 1), dt.date(2100, 1, 1)).map(dt.date.isoformat),
    st.sampled_from(["2026-02-30", "2026-1-5", "20260115", "2026-01-15T00:00:00", "٢٠٢٦-01-15"]),
    st.integers(0, 2_000_000_000),
    st.none(),
)


@st.composite
def batches(draw: st.DrawFn, view: FeatureView) -> list[Any]:
    """1 to 6 records, mostly valid; now and then a field wrong, left out or unknown, or a
    record that is not an object."""
    rules = schema_of(view).features
    # the shape comes from a random.Random seeded by hypothesis: its own draws lean to
    # their bounds, which would break nearly every record and leave no valid batch
    rng = random.Random(draw(st.integers(0, 2**32)))
    chance = 1 / (2 * len(rules))  # about one record in two has a field wrong or left out
    out: list[Any] = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.03:
            out.append(draw(WRONG))
            continue
        record: dict[str, Any] = {}
        for rule in rules:
            which = rng.random()
            if which >= chance:
                record[rule.name] = draw(valid_values(rule))
            elif which >= chance / 4:
                record[rule.name] = draw(wrong_values(rule))
            # else: left out
        if rng.random() < 0.5:
            record[view.entity] = draw(ENTITIES)
        if rng.random() < 0.5:
            record[view.event_date] = draw(DAYS)
        if rng.random() < 0.03:
            record[draw(st.sampled_from(["agee", "", "records", "x" * 100]))] = 1
        out.append(record)
    return out


def model_verdict(view: FeatureView, batch: list[Any]) -> list[dict[str, Any]] | None:
    """What the request model makes of each record sent as JSON (None: refused)."""
    model: type[BaseModel] = record_model(view)
    try:
        return [model.model_validate_json(json.dumps(r)).model_dump() for r in batch]
    except ValidationError:
        return None


def assert_same(view: FeatureView, fast: ColumnarBatch, expected: list[dict[str, Any]]) -> None:
    assert fast[:2] == expected[:2] and fast[1:] == expected[1:]  # before the list is built
    assert fast.values == expected
    assert list(fast) == expected and fast[-1] == expected[-1] and len(fast) == len(expected)
    for got, want in zip(fast.values, expected, strict=True):
        assert list(got) == list(want)  # the model's field order
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]
    frame = to_model_frame(view, pd.DataFrame.from_records(expected))
    pd.testing.assert_frame_equal(fast.frame, frame, check_dtype=False)
    assert [str(t) for t in fast.frame.dtypes] == [str(t) for t in frame.dtypes]


def check_against_the_model(view: FeatureView, batch: list[Any]) -> bool:
    """The invariant, for the batch as records and in the split form; True when the fast
    path took the records. The bodies are written by the standard library, which also
    writes what orjson cannot (integers past 64 bits, NaN)."""
    check_split_against_the_model(view, batch)
    fast = checked_batch(view, json.dumps({"records": batch}).encode(), max_records=1000)
    expected = model_verdict(view, batch)
    if fast is None:
        return False
    assert expected is not None, f"accepted what the request model refuses: {batch!r}"
    assert_same(view, fast, expected)
    return True


def as_split(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """The split form of records: every field any record sends (in first-seen order) is a
    column; a record that leaves one out sends null there."""
    columns = list(dict.fromkeys(k for r in batch for k in r))
    return {"columns": columns, "data": [[r.get(c) for c in columns] for r in batch]}


def check_split_against_the_model(view: FeatureView, batch: list[Any]) -> bool:
    """The split form's invariant: the fast path never takes what the request model
    refuses in the records the body holds (`split_records`, what serving validates it
    as), and gives the same values; True when it took the body."""
    if not all(isinstance(r, dict) for r in batch):
        return False
    body = as_split(batch)
    fast = checked_batch(view, json.dumps(body).encode(), max_records=1000)
    if fast is None:
        return False
    expected = model_verdict(view, split_records(body))
    assert expected is not None, f"accepted a split body the request model refuses: {body!r}"
    assert_same(view, fast, expected)
    return True


CREDIT = load_view_file(ROOT / "features" / "credit_score.yaml")
VIEWS = [CREDIT, *(load_view_file(p) for p in EXAMPLES)]


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_never_accepts_what_the_request_model_refuses_nor_changes_a_value(
    view: FeatureView,
) -> None:
    taken = []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batch=batches(view))
    def run(batch: list[Any]) -> None:
        taken.append(check_against_the_model(view, batch))

    run()
    assert any(taken), "the fast path took no generated batch: the test checked nothing"


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_plain_batches_take_the_fast_path(view: FeatureView) -> None:
    base = example_record(view)
    plain = [
        base,
        {**base, view.entity: 42, view.event_date: "2026-01-15"},
        {k: v for k, v in base.items() if k != view.entity},
    ]
    assert check_against_the_model(view, plain)


def test_client_batches_of_the_shipped_view_take_the_fast_path(view: FeatureView) -> None:
    batch = records(view, 300)
    assert any(v is None for r in batch for v in r.values())  # nulls included
    assert check_against_the_model(view, batch)
    body = orjson.dumps({"records": batch})
    taken = checked_batch(view, body, max_records=300)
    assert taken is not None and len(taken) == 300
    assert check_split_against_the_model(view, batch)  # the split form too


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_a_split_body_gives_what_its_records_give(view: FeatureView) -> None:
    """Columns in any order, and a nullable feature's column left out, are the records."""
    base = example_record(view)
    batch = [base, {**base, view.entity: 7}]
    body = as_split(batch)
    shuffled = list(reversed(body["columns"]))
    order = [body["columns"].index(c) for c in shuffled]
    reordered = {"columns": shuffled, "data": [[row[i] for i in order] for row in body["data"]]}
    records_form = checked_batch(view, orjson.dumps({"records": batch}), max_records=10)
    for form in (body, reordered):
        got = checked_batch(view, orjson.dumps(form), max_records=10)
        assert got is not None and records_form is not None
        assert got.values == records_form.values
        pd.testing.assert_frame_equal(got.frame, records_form.frame)
    nullable = [r.name for r in schema_of(view).features if r.nullable]
    if nullable:
        left_out = {k: v for k, v in base.items() if k != nullable[0]}
        assert check_split_against_the_model(view, [left_out, left_out])


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"columns": "age", "data": [[1]]}, "columns: a list of field names"),
        ({"columns": [1], "data": [[1]]}, "columns: a list of field names"),
        ({"columns": ["age", "age"], "data": [[1, 2]]}, "'age' named more than once"),
        ({"columns": ["age"], "data": {"age": 1}}, "data: a list of rows"),
        ({"columns": ["age"]}, "data: a list of rows"),
        ({"columns": ["age", "income"], "data": [[1, 2], [3]]}, r"data\.1: 1 values for 2"),
        ({"columns": ["age"], "data": [[1], {"age": 1}]}, r"data\.1: a dict for 1 columns"),
    ],
)
def test_a_split_body_of_the_wrong_shape_is_named(
    view: FeatureView, body: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        split_records(body)
    assert checked_batch(view, orjson.dumps(body), max_records=10) is None  # the model's 400


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"records": []}',
        b'{"records": {}}',
        b'{"records": [{}], "extra": 1}',
        b'{"records": [1]}',
        b'{"columns": ["age"], "data": []}',
        b'{"columns": ["age", "agee"], "data": [[30, 1]]}',
        b'{"columns": ["age"], "data": [[30]], "extra": 1}',
        b'{"columns": ["age"], "data": [30]}',
    ],
)
def test_anything_but_a_plain_body_goes_to_the_request_model(
    view: FeatureView, body: bytes
) -> None:
    assert checked_batch(view, body, max_records=1000) is None


def test_a_batch_over_the_limit_goes_to_the_request_model(view: FeatureView) -> None:
    body = orjson.dumps({"records": records(view, 5)})
    assert checked_batch(view, body, max_records=4) is None
    assert checked_batch(view, body, max_records=5) is not None


def edge_values(rule: FeatureRule) -> list[Any]:
    """Values on and past each edge of a feature's rules, valid and not."""
    odd: list[Any] = [None, True, "1", [1], {"a": 1}, 2**63, ""]
    if not rule.numeric:
        return [*odd, *rule.categories[:2], "x" * CATEGORY_LEN, "x" * (CATEGORY_LEN + 1), "é"]
    feature = rule.feature
    out = [*odd, 0, -0.0, 0.5, 1e308, -1e308, 7]
    for bound in (feature.min, feature.max):
        if bound is not None:
            out += [bound, int(bound), bound - 1, bound + 1, bound - 1e-9, bound + 1e-9,
                    bound + 0.5]  # fmt: skip
    return out


@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_one_edge_value_at_a_time(view: FeatureView) -> None:
    """Every feature's edge values, each in an otherwise plain batch, and left out."""
    base = example_record(view)
    taken = 0
    for rule in schema_of(view).features:
        for value in edge_values(rule):
            taken += check_against_the_model(view, [base, {**base, rule.name: value}])
        without = {k: v for k, v in base.items() if k != rule.name}
        taken += check_against_the_model(view, [base, without])
    for entity in ["", "x" * ENTITY_LEN, "x" * (ENTITY_LEN + 1), ENTITY_INT_MAX, True, 1.5]:
        taken += check_against_the_model(view, [{**base, view.entity: entity}])
    for day in ["2026-01-15", "2026-02-30", "2026-01-15T00:00:00", 0, "٢٠٢٦-01-15"]:
        taken += check_against_the_model(view, [{**base, view.event_date: day}])
    assert taken > len(view.features)  # the valid edges did take the fast path
