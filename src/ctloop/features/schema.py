"""The validation schema of a feature view: the one module that reads a feature's rules.

A view says, per feature, its type, allowed range or categories, whether it may be missing
and whether it is a whole number; its label says its classes or its range. Three places
hold data against those rules: import refuses bad rows with a message per row and column
(`ctloop.features.frames`), the data gate measures the share of bad values before training
(`ctloop.training.datagate`), and serving refuses bad requests at the edge
(`ctloop.features.records`). Each used to read the view on its own, so a rule could be
changed in one and not the others. Here `FeatureRule` / `LabelRule` read them once and
answer each caller in its own terms: breaches per row (import), measured rates against the
view's gate thresholds (gate), a pydantic field type (serving).

Why not pandera: its checks would still have to be generated from the view, it has no
pydantic field for the request model, its failure cases would have to be mapped back to
the messages users see (value, bound, allowed categories), and lazy validation with
failure-case collection is slower on large frames than the vectorised masks below.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import NoneType
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field, StringConstraints

from ctloop.features.spec import CATEGORY_LEN, MISSING, DataGate, Feature, Label
from ctloop.features.view import FeatureView

log = logging.getLogger(__name__)

# What edge-case requests send for an open category list: a value no model has seen.
UNSEEN_CATEGORY = "__never_seen_category__"


@dataclass(frozen=True)
class Breach:
    """Values breaking one rule of one column: which rule, which positions, and why.

    `reason` is a string or a function of the position, so that the message can quote the
    value without formatting a string for every row of a large frame that passed.
    """

    column: str
    rule: str
    mask: np.ndarray
    reason: str | Callable[[int], str]

    def positions(self) -> np.ndarray:
        """The 0-based positions of the offending values."""
        return np.flatnonzero(self.mask)

    def message(self, position: int) -> str:
        """What is wrong with the value at this position, for a person fixing the file."""
        return self.reason(position) if callable(self.reason) else self.reason


class Measure(NamedTuple):
    """One data-gate check: name, passed, detail, measured value, limit."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


def to_numbers(values: pd.Series) -> pd.Series:
    """Numbers (or text) as float64: NaN where missing or not a number."""
    parsed = pd.to_numeric(values, errors="coerce")
    return pd.Series(parsed.to_numpy(dtype="float64", na_value=np.nan), index=values.index)


def _mask(series: pd.Series) -> np.ndarray:
    return series.fillna(False).to_numpy(dtype=bool)


def _bounds(column: str, values: pd.Series, low: float | None, high: float | None) -> list[Breach]:
    """Finite values below `low` or above `high`, each with the value and the bound."""
    array = values.to_numpy()
    finite = np.isfinite(array)
    out = []
    if low is not None:
        below = finite & (array < low)
        out.append(
            Breach(column, "min", below, lambda i: f"{values.iloc[i]} is below the minimum {low}")
        )
    if high is not None:
        above = finite & (array > high)
        out.append(
            Breach(column, "max", above, lambda i: f"{values.iloc[i]} is above the maximum {high}")
        )
    return out


def _whole_number(value: float) -> float:
    if not float(value).is_integer():
        raise ValueError("must be a whole number")
    return value


class FeatureRule:
    """One feature's rules, read from the view once."""

    def __init__(self, feature: Feature) -> None:
        self.feature = feature
        self.name = feature.name
        self.numeric = feature.is_numeric
        self.nullable = feature.nullable
        self.categories: list[str] = list(feature.categories or [])
        self.open = feature.allow_unseen

    # --- import: text cells, one breach list per rule, in the order a reader wants them

    def parse(self, text: pd.Series) -> tuple[pd.Series, list[Breach]]:
        """Text cells (NA: missing) as typed values, and every rule they break.

        Numbers become float64 (NaN for missing), categories stay strings (None for
        missing); the breaches list what import must refuse, row by row.
        """
        missing = text.isna()
        name = self.name
        breaches: list[Breach] = []
        if self.numeric:
            values = to_numbers(text)
            breaches.append(
                Breach(
                    name,
                    "type",
                    (values.isna() & ~missing).to_numpy(),
                    lambda i: f"'{text.iloc[i]}' is not a number",
                )
            )
            breaches.append(
                Breach(name, "finite", np.isinf(values.to_numpy()), "value is not finite")
            )
            breaches += _bounds(name, values, self.feature.min, self.feature.max)
            if self.feature.integer:
                whole = np.isfinite(values.to_numpy()) & (values % 1 != 0).to_numpy()
                breaches.append(
                    Breach(
                        name, "integer", whole, lambda i: f"{values.iloc[i]} is not a whole number"
                    )
                )
            typed: pd.Series = values
        else:
            if not self.open:
                allowed = ", ".join(sorted(set(self.categories)))
                unknown = _mask(~missing & ~text.isin(self.categories))
                breaches.append(
                    Breach(
                        name,
                        "category",
                        unknown,
                        lambda i: f"unknown category '{text.iloc[i]}' (allowed: {allowed})",
                    )
                )
            too_long = _mask(~missing & (text.str.len() > CATEGORY_LEN))
            breaches.append(
                Breach(name, "length", too_long, f"category longer than {CATEGORY_LEN} characters")
            )
            typed = text.astype(object).where(~missing, None)
        if not self.nullable:
            breaches.append(
                Breach(name, "missing", missing.to_numpy(), "value is missing (not nullable)")
            )
        return typed, breaches

    # --- data gate: shares of bad values in a typed training frame, against the view's limits

    def missing_limit(self, gate: DataGate) -> float:
        """The share of missing values training data may have: the feature's own limit, the
        gate's for a nullable feature, none for a required one."""
        if self.feature.max_missing_rate is not None:
            return self.feature.max_missing_rate
        return gate.max_missing_rate if self.nullable else 0.0

    def measure(
        self,
        column: pd.Series,
        gate: DataGate,
        trained_categories: Iterable[str] = (),
        drifted: bool = False,
    ) -> list[Measure]:
        """The gate's checks of one feature in a training frame.

        `trained_categories`: categories the champion was trained on; an open list counts
        them as known. `drifted`: the monitor measured this feature as drifted, so new
        values of an open list are reported but accepted (a closed list never is).
        """
        name = self.name
        limit = self.missing_limit(gate)
        rate = float(column.isna().mean())
        out = [
            Measure(
                f"missing_rate:{name}",
                rate <= limit,
                f"{name}: {rate:.1%} missing (limit {limit:.1%})",
                rate,
                limit,
            )
        ]
        if self.numeric:
            values = to_numbers(column)
            bad_type = int((values.isna() & column.notna()).sum())
            out.append(
                Measure(
                    f"type:{name}",
                    bad_type == 0,
                    f"{name}: {bad_type} non-numeric values",
                    bad_type,
                    0,
                )
            )
            present = values.notna().to_numpy()
            wrong = np.isinf(values.to_numpy())
            for breach in _bounds(name, values, self.feature.min, self.feature.max):
                wrong |= breach.mask
            rate_out = float(wrong[present].mean()) if present.any() else 0.0
            lo, hi, cap = self.feature.min, self.feature.max, gate.max_out_of_range_rate
            out.append(
                Measure(
                    f"range:{name}",
                    rate_out <= cap,
                    f"{name}: {rate_out:.2%} outside [{lo}, {hi}] (limit {cap:.2%})",
                    rate_out,
                    cap,
                )
            )
            return out
        present = column.dropna().astype(str)
        known = set(self.categories)
        if self.open:
            known |= set(trained_categories)
        unknown = ~present.isin(known)
        rate_unk = float(unknown.mean()) if len(present) else 0.0
        limit = gate.max_unseen_category_rate if self.open else 0.0
        examples = ", ".join(sorted(present[unknown].unique()[:5]))
        ok = rate_unk <= limit
        detail = f"{name}: {rate_unk:.2%} unknown categories (limit {limit:.2%})" + (
            f": {examples}" if examples else ""
        )
        if not ok and self.open and drifted:
            ok, detail = True, detail + "; accepted: drift measured by the monitor"
        out.append(Measure(f"categories:{name}", ok, detail, rate_unk, limit))
        return out

    # --- serving: the request field

    def request_type(self) -> Any:
        """The pydantic type of this feature in a prediction request (None not included)."""
        meta: dict[str, Any] = {"description": self.feature.description or None}
        if self.numeric:
            meta.update(strict=True, allow_inf_nan=False)
            if self.feature.min is not None:
                meta["ge"] = self.feature.min
            if self.feature.max is not None:
                meta["le"] = self.feature.max
            typ: Any = Annotated[float, Field(**meta)]
            if self.feature.integer:
                typ = Annotated[typ, AfterValidator(_whole_number)]
            return typ
        if self.open:
            # unseen categories are passed through to CatBoost as strings
            return Annotated[
                str,
                StringConstraints(strict=True, min_length=1, max_length=CATEGORY_LEN),
                Field(**meta),
            ]
        return Annotated[Literal[tuple(self.categories)], Field(**meta)]

    def request_field(self) -> tuple[Any, Any]:
        """(type, default) for `pydantic.create_model`: required unless nullable."""
        typ = self.request_type()
        return (typ | None, None) if self.nullable else (typ, ...)

    def request_column(self, column: list[Any]) -> tuple[list[Any], np.ndarray] | None:
        """One feature of a whole batch of JSON-decoded requests at once, when every value
        is plainly what `request_type` takes: (the values as the request model dumps them,
        the model's column as `to_model_frame` types it). None at the first doubt, so the
        caller lets the request model judge (and word the error); never a value that model
        would refuse or convert differently."""
        kinds = set(map(type, column))
        null = NoneType in kinds
        if null and not self.nullable:
            return None
        if self.numeric:
            if not kinds <= {int, float, NoneType}:  # bool is its own type: refused here
                return None
            array = np.array(
                [math.nan if v is None else v for v in column] if null else column, np.float64
            )
            present = array[~np.isnan(array)] if null else array
            feature = self.feature
            if (
                np.isinf(present).any()
                or (feature.min is not None and (present < feature.min).any())
                or (feature.max is not None and (present > feature.max).any())
                or (feature.integer and (np.mod(present, 1) != 0).any())
            ):
                return None
            dumped = array.tolist()  # floats, as the model's strict float field gives them
            if null:
                dumped = [None if v is None else d for v, d in zip(column, dumped, strict=True)]
            return dumped, array
        if not kinds <= {str, NoneType}:
            return None
        given = set(column)
        given.discard(None)
        if self.open:
            if any(not 1 <= len(v) <= CATEGORY_LEN for v in given):
                return None
        elif not given <= set(self.categories):
            return None
        model = column
        if null:
            model = [MISSING if v is None else v for v in column]
        return column, np.array(model, dtype=object)

    def example(self) -> Any:
        """A valid value: a quarter into the range (whole if it must be), or the first
        category."""
        if not self.numeric:
            return (self.categories or [""])[0]
        lo = self.feature.min if self.feature.min is not None else 0.0
        hi = self.feature.max if self.feature.max is not None else lo + 1.0
        mid = lo + (hi - lo) / 4
        return float(round(mid)) if self.feature.integer else round(mid, 2)

    def edge(self, which: Literal["min", "max"]) -> float | None:
        """The bound a valid value may reach (None: unbounded or not a number)."""
        bound = getattr(self.feature, which) if self.numeric else None
        return None if bound is None else float(bound)

    def absent(self, default: Any) -> Any:
        """The most unusual value a valid request may carry: an unseen category for an open
        list, null where allowed, otherwise `default`."""
        if self.open:
            return UNSEEN_CATEGORY
        return None if self.nullable else default


class LabelRule:
    """The label's rules: its classes, or for regression its range."""

    def __init__(self, label: Label) -> None:
        self.label = label
        self.name = label.name
        self.classes = label.class_list

    def parse(self, text: pd.Series) -> tuple[pd.Series, pd.Series, list[Breach]]:
        """Label cells (NA: no label) as values (float64 for regression, class names
        otherwise), where a label is present, and the rules broken."""
        present = text.notna()
        name = self.name
        if self.label.is_regression:
            values = to_numbers(text)
            bad = present.to_numpy() & ~np.isfinite(values.to_numpy())
            breaches = [Breach(name, "type", bad, lambda i: f"'{text.iloc[i]}' is not a number")]
            breaches += _bounds(name, values, self.label.min, self.label.max)
            return values, present, breaches
        classes = self.classes
        bad = _mask(present & ~text.isin(classes))
        breaches = [
            Breach(
                name,
                "class",
                bad,
                lambda i: f"unknown class '{text.iloc[i]}' (classes: {', '.join(classes)})",
            )
        ]
        return text.astype(object).where(present, None), present, breaches

    def measure(self, labels: pd.Series) -> Measure:
        """The gate's `label_values` check: every label a known class, or a finite number in
        the label's range (a NaN or impossible regression target stops the run)."""
        if self.label.is_regression:
            values = pd.to_numeric(labels, errors="coerce")
            bad = int((values.isna() | ~np.isfinite(values.fillna(0))).sum())
            lo, hi = self.label.min, self.label.max
            outside = int(
                ((values < lo).sum() if lo is not None else 0)
                + ((values > hi).sum() if hi is not None else 0)
            )
            detail = (
                f"{bad} missing or non-numeric labels, {outside} outside [{lo}, {hi}]"
                if bad or outside
                else "all labels are finite numbers in range"
            )
            return Measure("label_values", bad == 0 and outside == 0, detail, bad + outside, 0)
        unknown = sorted(set(labels.dropna().astype(str)) - set(self.classes))
        missing = bool(labels.isna().any())
        detail = (
            f"unknown or missing labels: {unknown or 'missing values'}"
            if unknown or missing
            else "all labels are known classes"
        )
        return Measure("label_values", not unknown and not missing, detail)


class ViewSchema:
    """Every feature rule and the label rule of one view, in the view's order."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.features = [FeatureRule(f) for f in view.features]
        self.label = LabelRule(view.label)

    def feature(self, name: str) -> FeatureRule:
        """The rule of the named feature (KeyError if the view has none)."""
        for rule in self.features:
            if rule.name == name:
                return rule
        raise KeyError(name)


def schema_of(view: FeatureView) -> ViewSchema:
    """The validation schema of a view (cheap: rules are read, nothing is compiled)."""
    return ViewSchema(view)
