"""One feature rule, three enforcers: change a rule in a copy of the view and see import,
the data gate and serving's request model all follow it.

Each case edits one rule of `features/credit_score.yaml` (a lower maximum, a shorter
category list, a feature that may no longer be missing), writes the copy, loads it, and
sends the same value through the three paths: `ingest.files.import_csv` into a real
MariaDB store, `training.datagate.check_data` on a training frame, and the pydantic model
`features.records.record_model` builds. Under the shipped view the value passes all three
(so a refusal below is the edit's doing); under the edited view it is refused by all
three, and a value inside the new rule is accepted by all three.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from ctloop.errors import DataValidationError
from ctloop.features.records import example_record, record_model
from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest.files import import_csv
from ctloop.store.features import FeatureStore
from ctloop.training.datagate import check_data
from tests.support.paths import ROOT

AS_OF = pd.Timestamp("2026-03-01")


def _feature(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["features"] if f["name"] == name)


def _lower_max(raw: dict[str, Any]) -> None:
    _feature(raw, "interest_rate")["max"] = 30


def _drop_category(raw: dict[str, Any]) -> None:
    _feature(raw, "credit_mix")["categories"] = ["Bad", "Standard"]


def _required(raw: dict[str, Any]) -> None:
    feature = _feature(raw, "annual_income")
    feature["nullable"] = False
    feature.pop("max_missing_rate")


# edit, column, a value the edit makes invalid, a value valid under the edit, the problem
CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str, Any, Any, str]] = {
    "range": (_lower_max, "interest_rate", 35.0, 25.0, "35.0 is above the maximum 30.0"),
    "categories": (_drop_category, "credit_mix", "Good", "Standard",
                   "unknown category 'Good' (allowed: Bad, Standard)"),
    "nullability": (_required, "annual_income", None, 52000.0, "value is missing"),
}  # fmt: skip


@pytest.fixture
def mariadb_store(mariadb_url: str, view: FeatureView) -> Iterator[FeatureStore]:
    store = FeatureStore(mariadb_url)
    store.init([view])
    yield store
    store.dispose()


def edited_view(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> FeatureView:
    raw = yaml.safe_load((ROOT / "features" / "credit_score.yaml").read_text(encoding="utf-8"))
    raw = copy.deepcopy(raw)
    edit(raw)
    folder = tmp_path / "edited"
    folder.mkdir(exist_ok=True)
    path = folder / "credit_score.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_view_file(path)


def record(view: FeatureView, column: str, value: Any) -> dict[str, Any]:
    return {**example_record(view), column: value}


def imports(
    store: FeatureStore, view: FeatureView, tmp_path: Path, entity: str, column: str, value: Any
) -> str | None:
    """Import one row through `ctloop import`'s path; None if written, else the error."""
    row = {**record(view, column, value), view.entity: entity, view.event_date: "2026-02-10"}
    path = tmp_path / f"{entity}.csv"
    frame = pd.DataFrame([{k: "" if v is None else v for k, v in row.items()}])
    frame.to_csv(path, index=False)
    try:
        result = import_csv(store, view, path)
    except DataValidationError as exc:
        return str(exc)
    assert result.features_written == 1
    return None


def gate_failures(view: FeatureView, column: str, value: Any) -> list[str]:
    """The data gate's failed checks of this column on a training frame where one row of
    forty carries the value (the others are valid)."""
    rows = [
        {**(record(view, column, value) if i == 0 else example_record(view)),
         view.entity: f"c{i}", view.event_date: AS_OF - pd.Timedelta(days=1 + i % 10),
         view.label.name: view.label.class_list[i % len(view.label.class_list)]}
        for i in range(40)
    ]  # fmt: skip
    frame = pd.DataFrame(rows)
    report = check_data(view, frame, AS_OF)
    return [c.detail for c in report.failed if c.name.endswith(f":{column}")]


def serving_problems(view: FeatureView, column: str, value: Any) -> list[str]:
    """The fields the request model refuses in a record carrying the value."""
    try:
        record_model(view).model_validate(record(view, column, value))
    except ValidationError as exc:
        return [str(err["loc"][0]) for err in exc.errors()]
    return []


@pytest.mark.parametrize("case", list(CASES))
def test_import_gate_and_serving_follow_an_edited_rule(
    case: str, tmp_path: Path, view: FeatureView, mariadb_store: FeatureStore
) -> None:
    edit, column, outside, inside, problem = CASES[case]
    edited = edited_view(tmp_path, edit)

    # the shipped view takes the value everywhere: what follows is the edit's doing
    assert imports(mariadb_store, view, tmp_path, "shipped", column, outside) is None
    assert gate_failures(view, column, outside) == []
    assert serving_problems(view, column, outside) == []

    refused = imports(mariadb_store, edited, tmp_path, "edited-out", column, outside)
    assert refused is not None and f"row 1, column '{column}': {problem}" in refused
    assert gate_failures(edited, column, outside), f"the data gate let {outside!r} through"
    assert serving_problems(edited, column, outside) == [column]

    assert imports(mariadb_store, edited, tmp_path, "edited-in", column, inside) is None
    assert gate_failures(edited, column, inside) == []
    assert serving_problems(edited, column, inside) == []
