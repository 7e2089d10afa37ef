"""Training itself, in-process on a few synthetic days: no store, no registry, no server.

The CT pipeline around it (gates, registry, promotion) is tested against MariaDB in
`tests/integration/test_pipeline.py`.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from ctloop.features.view import load_view_file
from ctloop.training import fit as training
from tests.support.paths import FEATURES_DIR
from tests.support.serving import labelled

START = dt.date(2026, 1, 1)


def test_weighted_rows_before_a_change_count_less() -> None:
    """`fit` gives rows before `weigh_before` the view's `pre_change_weight`: a model that
    sees the old rule at weight 0.1 and the new one at 1 learns mostly the new one."""
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    small = view.model_copy(update={"training": view.training.model_copy(
        update={"iterations": 60, "validation_days": 2})})  # fmt: skip
    frame = labelled(view, START, 8, seed=3)
    change = pd.Timestamp(START + dt.timedelta(days=4))
    flipped = pd.to_datetime(frame[view.event_date]) >= change  # the new rule: Good <-> Poor
    label = view.label.name
    frame.loc[flipped, label] = frame.loc[flipped, label].map(
        {"Good": "Poor", "Poor": "Good", "Standard": "Standard"}
    )
    plain = training.fit(small, frame, pd.Timestamp(START + dt.timedelta(days=8)))
    weighted = training.fit(small, frame, pd.Timestamp(START + dt.timedelta(days=8)),
                            weigh_before=change)  # fmt: skip
    assert weighted.metrics["macro_f1"] > plain.metrics["macro_f1"] + 0.05
