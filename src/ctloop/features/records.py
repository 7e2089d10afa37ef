"""What the prediction service accepts and how a request becomes model input.

The request schema is derived from the feature view, never written by hand: each field's
type comes from `ctloop.features.schema`, the same rules import and the data gate apply
(types, nullability, ranges, whole numbers and closed category lists). Bad input is refused at the
edge with every bad field named, and never reaches the model.

`model_rows` is the serving twin of `ctloop.core.predictor.to_model_frame`: the same typing
(numbers as floats with NaN for missing, categories as strings with an explicit missing
marker) built as plain lists. A one-row pandas frame costs ~10 ms to build and type on
pandas 3, a list ~10 µs; CatBoost gives identical probabilities for both, and the service
checks that on every model it loads (see `serving/model.py`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model

from ctloop.features.schema import schema_of
from ctloop.features.spec import ENTITY_LEN, MISSING
from ctloop.features.view import FeatureView

# Integers whose decimal text (with a sign) fits the entity column.
ENTITY_INT_MAX = 10 ** (ENTITY_LEN - 1) - 1


def example_record(view: FeatureView) -> dict[str, Any]:
    """A valid record (values a quarter into each range, first categories) for docs and
    smoke tests."""
    return {view.entity: "customer-1", **{r.name: r.example() for r in schema_of(view).features}}


def sample_records(view: FeatureView) -> list[dict[str, Any]]:
    """Edge-case records from the view alone (no database needed): bounds, every category,
    missing values where allowed. Used to check a model before it may serve."""
    rules = schema_of(view).features
    base = example_record(view)
    out = [base]
    for which in ("min", "max"):
        edges = {r.name: r.edge(which) for r in rules}
        out.append({**base, **{name: v for name, v in edges.items() if v is not None}})
    lists = [r for r in rules if not r.numeric]
    for i in range(max((len(r.categories) for r in lists), default=0)):
        out.append({**base, **{r.name: r.categories[i % len(r.categories)] for r in lists}})
    out.append({**base, **{r.name: r.absent(base[r.name]) for r in rules}})
    return out


def record_model(view: FeatureView) -> type[BaseModel]:
    """The pydantic model of one prediction request for this view.

    Required: every non-nullable feature (unless the view is online: then any feature
    may be left out and comes from the entity's newest row in the store). Optional (null
    or absent): nullable features, the entity key and the event date, which are logged
    (the monitor joins landed labels to predictions on both). Unknown fields are refused
    so that a typo in a feature name is an error, not a silently missing value.
    """
    # The int branch is strict and bounded so that its text fits the log column too: a lax
    # int would turn a string the str branch refused (65 zeros: too long) into 0, and the
    # log would hold an entity the client never sent.
    entity_type = Annotated[
        Annotated[str, StringConstraints(min_length=1, max_length=ENTITY_LEN)]
        | Annotated[int, Field(strict=True, ge=-ENTITY_INT_MAX, le=ENTITY_INT_MAX)]
        | None,
        Field(description=f"optional {view.entity}, stored in the prediction log"),
    ]
    date_type = Annotated[
        dt.date | None,
        Field(description=f"optional {view.event_date} (ISO date) the record describes; "
                          "stored in the prediction log to join labels that land later"),
    ]  # fmt: skip
    fields: dict[str, Any] = {view.entity: (entity_type, None), view.event_date: (date_type, None)}
    for rule in schema_of(view).features:
        typ, default = rule.request_field()
        if view.online is not None and default is ...:
            # online: a feature left out comes from the store (a sent null is still
            # refused for a feature that may not be null, by serving's fill)
            typ = typ | None
            default = Field(
                default=None,
                description=f"left out: taken from the {view.entity}'s newest row in the "
                "feature store; null is refused",
            )
        fields[rule.name] = (typ, default)
    config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        title=f"{view.name} record",
        # OpenAPI 3.0 `example` (BentoML's spec model has no JSON-Schema `examples`)
        json_schema_extra={"example": {**example_record(view), view.event_date: "2026-01-15"}},
    )
    name = "".join(part.title() for part in view.name.split("_")) + "Record"
    return create_model(name, __config__=config, **fields)


def entity_of(view: FeatureView, values: Mapping[str, Any]) -> str | None:
    """The entity id of a validated record as the prediction log stores it."""
    value = values.get(view.entity)
    return None if value is None else str(value)[:ENTITY_LEN]


def logged_features(
    view: FeatureView, values: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """The features JSON of a prediction log row: every feature, plus the event date when
    the client sent one (ISO text, so the row stays JSON). `names`: the view's feature
    names, for a caller that logs many records (the view builds that list on each ask)."""
    out = {name: values.get(name) for name in (names or view.feature_names)}
    day = values.get(view.event_date)
    if day is not None:
        out[view.event_date] = day.isoformat() if isinstance(day, dt.date) else str(day)
    return out


def model_rows(view: FeatureView, records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Records as CatBoost input rows, typed exactly as `to_model_frame` types a frame."""
    plan = [(f.name, f.is_numeric) for f in view.features]
    rows = []
    for record in records:
        row: list[Any] = []
        for name, numeric in plan:
            value = record.get(name)
            if numeric:
                row.append(math.nan if value is None else float(value))
            else:
                row.append(MISSING if value is None else str(value))
        rows.append(row)
    return rows
