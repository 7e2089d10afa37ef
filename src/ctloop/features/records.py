"""What the prediction service accepts and how a request becomes model input.

The request schema is derived from the feature view, never written by hand, so the
service validates exactly the contract the data gate enforces on training data: types,
nullability, ranges, whole numbers and closed category lists. Bad input is refused at the
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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from ctloop.core.stats import MISSING
from ctloop.features.view import Feature, FeatureView
from ctloop.store.tables import CATEGORY_LEN, ENTITY_LEN

# Integers whose decimal text (with a sign) fits the entity column.
ENTITY_INT_MAX = 10 ** (ENTITY_LEN - 1) - 1


def _whole_number(value: float) -> float:
    if not float(value).is_integer():
        raise ValueError("must be a whole number")
    return value


def _feature_type(feature: Feature) -> Any:
    """The pydantic type of one feature, with its constraints from the view."""
    meta: dict[str, Any] = {"description": feature.description or None}
    if feature.is_numeric:
        meta.update(strict=True, allow_inf_nan=False)
        if feature.min is not None:
            meta["ge"] = feature.min
        if feature.max is not None:
            meta["le"] = feature.max
        typ: Any = Annotated[float, Field(**meta)]
        if feature.integer:
            typ = Annotated[typ, AfterValidator(_whole_number)]
    elif feature.allow_unseen:
        # unseen categories are passed through to CatBoost as strings
        typ = Annotated[
            str,
            StringConstraints(strict=True, min_length=1, max_length=CATEGORY_LEN),
            Field(**meta),
        ]
    else:
        typ = Annotated[Literal[tuple(feature.categories or ())], Field(**meta)]
    return typ


def example_record(view: FeatureView) -> dict[str, Any]:
    """A valid record (mid-range numbers, first categories) for docs and smoke tests."""
    out: dict[str, Any] = {view.entity: "customer-1"}
    for f in view.features:
        if f.is_numeric:
            lo = f.min if f.min is not None else 0.0
            hi = f.max if f.max is not None else lo + 1.0
            mid = lo + (hi - lo) / 4
            out[f.name] = float(round(mid)) if f.integer else round(mid, 2)
        else:
            out[f.name] = (f.categories or [""])[0]
    return out


def record_model(view: FeatureView) -> type[BaseModel]:
    """The pydantic model of one prediction request for this view.

    Required: every non-nullable feature. Optional (null or absent): nullable features,
    the entity key and the event date, which are only logged (the monitor joins landed
    labels to predictions on both). Unknown fields are refused so that a typo in a feature
    name is an error, not a silently missing value.
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
    for feature in view.features:
        typ = _feature_type(feature)
        if feature.nullable:
            fields[feature.name] = (typ | None, None)
        else:
            fields[feature.name] = (typ, ...)
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


def logged_features(view: FeatureView, values: Mapping[str, Any]) -> dict[str, Any]:
    """The features JSON of a prediction log row: every feature, plus the event date when
    the client sent one (ISO text, so the row stays JSON)."""
    out = {name: values.get(name) for name in view.feature_names}
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
