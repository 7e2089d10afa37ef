"""A seeded synthetic stream of credit-score records, with named drift scenarios.

This module simulates the outside world for the `credit_score` view: customers arrive each
day, a hidden scoring rule (with noise) decides their class, and labels land some days
later. Being the world, not the pipeline, it is the one place besides the feature view
that knows these feature names; it checks its columns against the view so the two cannot
diverge silently.

Each day is drawn from its own generator seeded by (seed, day), so a day's rows do not
depend on which range it was generated in: the same seed always gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView, load_view
from ctloop.store.features import FeatureStore, as_of_instant


class Scenario(StrEnum):
    """What changes in the world from the drift start day on."""

    NONE = "none"  # the control: nothing changes
    COVARIATE_SHIFT = "covariate_shift"  # incomes fall, gig work appears, payments slip
    CONCEPT_DRIFT = "concept_drift"  # same customers, but the scoring rule changes


OCCUPATIONS = np.array(
    [
        "Accountant", "Architect", "Developer", "Doctor", "Engineer", "Entrepreneur",
        "Journalist", "Lawyer", "Manager", "Mechanic", "Media_Manager", "Musician",
        "Scientist", "Teacher", "Writer",
    ]
)  # fmt: skip
_OCC_INCOME = np.array(
    [0.1, 0.25, 0.3, 0.45, 0.3, 0.2, -0.15, 0.45, 0.25, -0.15, -0.05, -0.3, 0.2, -0.1, -0.25]
)
NEW_OCCUPATION = "Gig_Worker"
PAYMENT_BEHAVIOURS = np.array(
    [
        "Low_spent_Small_value_payments", "Low_spent_Medium_value_payments",
        "Low_spent_Large_value_payments", "High_spent_Small_value_payments",
        "High_spent_Medium_value_payments", "High_spent_Large_value_payments",
    ]
)  # fmt: skip
FEATURES = [
    "age", "occupation", "annual_income", "monthly_inhand_salary", "num_bank_accounts",
    "num_credit_card", "interest_rate", "num_of_loan", "delay_from_due_date",
    "num_of_delayed_payment", "outstanding_debt", "credit_utilization_ratio",
    "credit_history_age_months", "total_emi_per_month", "credit_mix",
    "payment_of_min_amount", "payment_behaviour",
]  # fmt: skip
CLASSES = ("Good", "Standard", "Poor")
# Score cut-offs (Poor below the first, Good above the second), calibrated on the
# no-drift population for roughly 28% Poor / 50% Standard / 22% Good.
_CUTS = {"base": (-1.31, 1.90), "concept": (-0.62, 0.82)}
LABEL_FLIP_RATE = 0.03


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    """Everything that decides the generated rows."""

    seed: int = 7
    rows_per_day: int = 2000
    scenario: Scenario = Scenario.NONE
    drift_start: dt.date | None = None
    label_delay_days: int = 7
    population: int | None = None

    def drifting(self, day: dt.date) -> bool:
        """Whether the scenario's change is in effect on this day (from `drift_start` on)."""
        return (
            self.scenario is not Scenario.NONE
            and self.drift_start is not None
            and day >= self.drift_start
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _score(frame: pd.DataFrame, rule: str) -> np.ndarray:
    """The hidden rule: higher is better credit. NaN inputs take neutral values."""
    income = np.log(frame["annual_income"].fillna(45_000).to_numpy() / 45_000)
    delayed = frame["num_of_delayed_payment"].fillna(12).to_numpy()
    mix = frame["credit_mix"].map({"Good": 1.0, "Standard": 0.0, "Bad": -1.0}).to_numpy()
    minpay = frame["payment_of_min_amount"].map({"No": 0.5, "NM": 0.0, "Yes": -0.5}).to_numpy()
    if rule == "base":
        return (
            0.9 * income
            - 0.035 * (frame["delay_from_due_date"].to_numpy() - 20)
            - 0.06 * (delayed - 12)
            - 0.0004 * (frame["outstanding_debt"].to_numpy() - 1400)
            + 0.6 * mix
            + minpay
            - 0.03 * (frame["interest_rate"].to_numpy() - 14)
            + 0.002 * (frame["credit_history_age_months"].to_numpy() - 220)
        )
    # concept drift: lenders now judge on card count, utilisation, age and loan load;
    # delays and credit mix stop mattering.
    return (
        -0.22 * (frame["num_credit_card"].to_numpy() - 5)
        - 0.09 * (frame["credit_utilization_ratio"].to_numpy() - 32)
        + 0.035 * (frame["age"].to_numpy() - 38)
        - 0.25 * (frame["num_of_loan"].to_numpy() - 3)
        + 0.4 * income
    )


def generate_day(day: dt.date, config: StreamConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day of customers (features) and their labels with arrival times."""
    n = config.rows_per_day
    rng = np.random.default_rng([config.seed, day.toordinal()])
    drift = config.drifting(day)
    shift = drift and config.scenario is Scenario.COVARIATE_SHIFT

    population = config.population or max(50_000, 20 * n)
    ids = rng.choice(population, size=n, replace=False)
    risk = rng.normal(0.0, 1.0, n)

    occ_idx = rng.integers(0, len(OCCUPATIONS), n)
    occupation = OCCUPATIONS[occ_idx].astype(object)
    income_log = np.log(42_000) + _OCC_INCOME[occ_idx] - 0.25 * risk + rng.normal(0, 0.45, n)
    if shift:
        gig = rng.random(n) < 0.25
        occupation[gig] = NEW_OCCUPATION
        income_log = income_log + np.log(0.6) - 0.3 * gig
    annual_income = np.clip(np.exp(income_log), 7_000, 2_000_000)
    salary = annual_income / 12 * rng.uniform(0.72, 0.86, n)
    delay_boost = 10 if shift else 0

    loans = np.clip(rng.poisson(np.clip(3 + risk, 0.2, None)), 0, 9)
    frame = pd.DataFrame(
        {
            "customer_id": [f"CUS_{i:07d}" for i in ids],
            "event_date": day,
            "age": np.clip(np.round(rng.normal(38, 11, n) - 2 * risk), 18, 80),
            "occupation": occupation,
            "annual_income": np.round(annual_income, 2),
            "monthly_inhand_salary": np.round(salary, 2),
            "num_bank_accounts": np.clip(rng.poisson(4 + 0.8 * np.clip(risk, -3, 3)), 0, 11),
            "num_credit_card": np.clip(rng.poisson(5, n) + (risk > 1), 0, 11),
            "interest_rate": np.round(np.clip(14 + 6 * risk + rng.normal(0, 3, n), 1, 34), 1),
            "num_of_loan": loans,
            "delay_from_due_date": np.clip(
                np.round(20 + 11 * risk + rng.normal(0, 6, n) + delay_boost), 0, 67
            ),
            "num_of_delayed_payment": np.clip(np.round(12 + 5 * risk + rng.normal(0, 3, n)), 0, 28),
            "outstanding_debt": np.round(
                np.clip(1400 + 850 * risk + rng.normal(0, 450, n), 0, 5000), 2
            ),
            "credit_utilization_ratio": np.round(
                np.clip(rng.normal(32, 5, n) + (6 if shift else 0), 20, 50), 2
            ),
            "credit_history_age_months": np.clip(np.round(rng.normal(220 - 55 * risk, 75)), 1, 404),
            "total_emi_per_month": np.round(loans * rng.lognormal(np.log(35), 0.6, n), 2),
            "credit_mix": np.where(
                rng.random(n) < _sigmoid(1.6 * risk - 1.2),
                "Bad",
                np.where(rng.random(n) < _sigmoid(-1.6 * risk - 0.4), "Good", "Standard"),
            ).astype(object),
            "payment_of_min_amount": np.where(
                rng.random(n) < 0.12,
                "NM",
                np.where(rng.random(n) < _sigmoid(1.3 * risk), "Yes", "No"),
            ).astype(object),
            "payment_behaviour": PAYMENT_BEHAVIOURS[rng.integers(0, 6, n)].astype(object),
        }
    )
    # Missing values, as real bureau data has them.
    for column, rate in (
        ("occupation", 0.03),
        ("annual_income", 0.02),
        ("monthly_inhand_salary", 0.12),
        ("num_of_delayed_payment", 0.07),
    ):
        frame.loc[rng.random(n) < rate, column] = None

    rule = "concept" if drift and config.scenario is Scenario.CONCEPT_DRIFT else "base"
    score = _score(frame, rule) + rng.normal(0, 0.35, n)
    low, high = _CUTS[rule]
    label_idx = np.where(score < low, 2, np.where(score > high, 0, 1))
    flip = rng.random(n) < LABEL_FLIP_RATE
    label_idx[flip] = rng.integers(0, 3, int(flip.sum()))
    arrive_base = dt.datetime.combine(day, dt.time.min) + dt.timedelta(days=config.label_delay_days)
    labels = pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "event_date": day,
            "credit_score": np.array(CLASSES, dtype=object)[label_idx],
            "arrived_at": arrive_base + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
        }
    )
    return frame, labels


def check_view(view: FeatureView) -> None:
    """Refuse to generate for a view whose columns the simulator does not produce."""
    expected = (view.entity, view.event_date, view.label.name, sorted(view.feature_names))
    have = ("customer_id", "event_date", "credit_score", sorted(FEATURES))
    if expected != have:
        raise CtloopError(
            f"the synthetic stream simulates the credit_score view; view '{view.name}' "
            "has other columns (use `ctloop import` for real data)"
        )


def stream(
    view: FeatureView, start: dt.date, days: int, config: StreamConfig
) -> Iterator[tuple[dt.date, pd.DataFrame, pd.DataFrame]]:
    """Days `start` .. `start + days - 1`, each as (day, features, labels)."""
    check_view(view)
    if days <= 0:
        raise CtloopError(f"days must be positive, got {days}")
    if config.rows_per_day <= 0:
        raise CtloopError(f"rows_per_day must be positive, got {config.rows_per_day}")
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        features, labels = generate_day(day, config)
        yield day, features, labels


def land_synthetic_day(
    view_name: str,
    day: dt.date,
    rows_per_day: int = 2000,
    seed: int = 7,
    store_url: str | None = None,
) -> dict[str, Any]:
    """Land one day of the synthetic stream: that day's feature rows and the labels that
    arrived during that day (of earlier days, `label_delay_days` late).

    Same seed and rows per day as `ctloop generate` give the same rows, so this continues
    a history generated by the CLI; re-running a day upserts the same rows again.
    """
    view = load_view(view_name)
    config = StreamConfig(
        seed=seed, rows_per_day=rows_per_day, label_delay_days=view.training.label_delay_days
    )
    begin, end = as_of_instant(day), as_of_instant(day + dt.timedelta(days=1))
    check_view(view)
    features, _ = generate_day(day, config)
    label_day = day - dt.timedelta(days=config.label_delay_days)
    _, labels = generate_day(label_day, config)
    landed = labels[(labels["arrived_at"] >= begin) & (labels["arrived_at"] < end)]
    store = FeatureStore(store_url) if store_url else FeatureStore.from_settings()
    try:
        store.init([view])
        n_features, n_labels = store.ingest(view, features, landed if len(landed) else None)
    finally:
        store.dispose()
    result = {
        "view": view.name,
        "day": day.isoformat(),
        "feature_rows": n_features,
        "labels": n_labels,
        "labels_of_day": label_day.isoformat(),
    }
    log.info("landed %s", result)
    return result
