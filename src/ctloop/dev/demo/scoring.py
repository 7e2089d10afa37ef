"""How well each model did, per simulated day: what was served (the prediction log joined
to the labels that landed), the first champion on the same customers, and an oracle
retrained every morning on every label since the change (the line no policy can beat).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from ctloop.core.predictor import Predictor, to_model_frame
from ctloop.predlog.store import CHAMPION_ROLE, PredictionLog
from ctloop.training import fit as training


def daily_accuracy(
    view: Any, store: Any, first_champion: Any, days: dict[str, pd.DataFrame]
) -> dict[str, tuple[float | None, float | None]]:
    """Per day: accuracy of what was served (prediction log joined to landed labels) and of
    the first champion on the same customers."""
    logs = PredictionLog(store).read(
        view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), role=CHAMPION_ROLE
    )  # fmt: skip
    first = min(days)
    last = max(days)
    labels = store.labels_for_days(
        view, dt.date.fromisoformat(first), dt.date.fromisoformat(last), dt.datetime(2100, 1, 1)
    )
    labels = labels.assign(
        _day=pd.to_datetime(labels[view.event_date]).dt.strftime("%Y-%m-%d"),
        _entity=labels[view.entity].astype(str),
    )[["_day", "_entity", view.label.name]]
    served = logs.assign(
        _day=pd.to_datetime(logs[view.event_date]).dt.strftime("%Y-%m-%d"),
        _entity=logs["entity_id"].astype(str),
    ).merge(labels, on=["_day", "_entity"])
    served_acc = (
        (served["prediction"] == served[view.label.name]).groupby(served["_day"]).mean().to_dict()
    )
    out: dict[str, tuple[float | None, float | None]] = {}
    for day, features in days.items():
        truth = features[[view.entity]].astype(str).rename(columns={view.entity: "_entity"})
        truth = truth.assign(_day=day).merge(labels, on=["_day", "_entity"], how="left")
        classes = first_champion.predict(features).predictions
        known = truth[view.label.name].notna().to_numpy()
        static = (
            float((pd.Series(classes)[known].to_numpy() == truth[view.label.name][known]).mean())
            if known.any()
            else None
        )
        out[day] = (served_acc.get(day), static)
    return out


def oracle_accuracy(
    view: Any, store: Any, change: dt.date, days: dict[str, pd.DataFrame]
) -> dict[str, float]:
    """Per day after the change: the accuracy of a model retrained that morning on every
    labelled row since the (true) change that had landed by then, with the view's CatBoost
    parameters. No retraining policy can know more at that moment: the line the served
    model is measured against."""
    labels = store.labels_for_days(view, change, max(dt.date.fromisoformat(d) for d in days),
                                   dt.datetime(2100, 1, 1))  # fmt: skip
    truth = labels.assign(_day=pd.to_datetime(labels[view.event_date]).dt.strftime("%Y-%m-%d"))
    out: dict[str, float] = {}
    params = training.catboost_params(view)
    params.pop("early_stopping_rounds", None)
    for day, features in days.items():
        as_of = dt.date.fromisoformat(day)
        if as_of <= change:
            continue
        rows = store.training_set(view, as_of, (as_of - change).days)
        if len(rows) < 100 or rows[view.label.name].nunique() < len(view.label.class_list):
            continue
        model = training.new_model(view, params)
        model.fit(to_model_frame(view, rows), training.labels_of(view, rows))
        answered = Predictor(view, model, "oracle", "").predict(features).predictions
        known = features[[view.entity]].astype(str).assign(_answer=answered, _day=day).merge(
            truth.assign(**{view.entity: truth[view.entity].astype(str)}),
            on=[view.entity, "_day"],
        )  # fmt: skip
        if len(known):
            out[day] = float((known["_answer"] == known[view.label.name]).mean())
    return out
