"""Serving's request model, generated from the feature view: what a request may hold, and
the entity logged exactly as it was sent. No server: the model is validated in-process;
`tests/integration/test_serving.py` sends the same through a real `bentoml serve`.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ctloop.features.records import entity_of, record_model
from ctloop.features.view import FeatureView
from tests.support.serving import records


def test_request_schema_follows_the_feature_view(view: FeatureView) -> None:
    model = record_model(view)
    good = records(view, 3)[0]
    assert model.model_validate(good)
    cases = {
        "age": ("thirty", "float_type"),
        "num_of_loan": (2.5, "must be a whole number"),
        "interest_rate": (99, "less_than_equal"),
        "credit_mix": ("Excellent", "literal_error"),
        "payment_behaviour": (None, "literal_error"),
    }
    for field, (value, expected) in cases.items():
        with pytest.raises(ValidationError) as err:
            model.model_validate({**good, field: value})
        assert err.value.errors()[0]["loc"] == (field,)
        assert expected in str(err.value)
    missing = {k: v for k, v in good.items() if k != "outstanding_debt"}
    with pytest.raises(ValidationError, match="outstanding_debt"):
        model.model_validate(missing)
    with pytest.raises(ValidationError, match="agee"):
        model.model_validate({**good, "agee": 3})
    # nullable features may be null or absent; an unseen occupation is allowed by the view
    lenient = {k: v for k, v in good.items() if k != "annual_income"}
    assert model.model_validate({**lenient, "occupation": "Astronaut"}).occupation == "Astronaut"


@pytest.mark.parametrize(
    ("entity", "logged"),
    [("0042", "0042"), (42, "42"), (-(10**63 - 1), str(-(10**63 - 1))), ("x" * 64, "x" * 64)],
)
def test_entity_is_logged_as_sent(view: FeatureView, entity: Any, logged: str) -> None:
    record = record_model(view).model_validate({**records(view, 1)[0], view.entity: entity})
    assert entity_of(view, record.model_dump()) == logged


@pytest.mark.parametrize("entity", ["0" * 65, 10**63, True, 1.5, ""])
def test_entity_that_cannot_be_logged_as_sent_is_refused(view: FeatureView, entity: Any) -> None:
    """Found by fuzzing: 65 zeros failed the string branch and the lax int branch took them
    as 0, so the log held an entity the client never sent."""
    with pytest.raises(ValidationError) as err:
        record_model(view).model_validate({**records(view, 1)[0], view.entity: entity})
    assert {e["loc"][0] for e in err.value.errors()} == {view.entity}
