"""A window's distribution as counts per bucket: what the drift statistics need, computed
from rows here or by the database (`ctloop.predlog.summaries`), with the same result.

A monitor check over a busy day reads millions of log rows; the distances it needs do not
need the rows. A numeric column is summarized as the count and the sum of its values in
each bucket between consecutive *bucket edges*: the distinct values of the reference's
sample plus its PSI bin edges. Within such a bucket the reference's distribution function
is flat, so the Wasserstein distance computed with each bucket's values moved to their
mean is the distance on the rows themselves, except in a bucket where the window's
distribution function crosses the reference's (it then errs by less than that bucket's
width times its share of the window: about 1/5000 of the reference's range per crossing).
PSI bins are unions of buckets, so PSI is exact. A categorical column is summarized as its
count per category (missing counted as the `MISSING` category), which is exact.

`numeric_summary` and `categorical_summary` compute a summary from values, row by row;
the database computes the same from `INTERVAL(...) ... GROUP BY`: the two agree to
rounding (tests hold them to 1e-9), so a check gives the same drift values whichever
computed its summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from ctloop.core.stats import MISSING, FeatureDistance, js_distance, psi


@dataclass(frozen=True)
class NumericSummary:
    """Counts and sums of a numeric column's present values per bucket (bucket i holds
    edges[i-1] <= x < edges[i]; bucket 0 everything below edges[0], the last everything
    from edges[-1] on), and how many values were missing."""

    edges: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    missing: int

    @property
    def present(self) -> int:
        """Values present (the n of the noise floor)."""
        return int(self.counts.sum())

    @property
    def rows(self) -> int:
        """Rows summarized, missing included."""
        return self.present + self.missing


@dataclass(frozen=True)
class CategoricalSummary:
    """Rows per category, missing values under `MISSING`."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Rows summarized, missing included."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class WindowSummary:
    """Everything the drift statistics read from a window of logged predictions."""

    rows: int
    features: dict[str, NumericSummary | CategoricalSummary]
    predictions: CategoricalSummary | None = None  # predicted classes (classification)
    output: NumericSummary | None = None  # the binary score or the regression value


def bucket_edges(reference: dict[str, Any]) -> np.ndarray:
    """A numeric reference's bucket edges: its sample's distinct values and its PSI edges,
    sorted (see the module docstring)."""
    values = np.concatenate([np.asarray(reference.get("sample", []), dtype=float),
                             np.asarray(reference.get("edges", []), dtype=float)])  # fmt: skip
    return np.unique(values[np.isfinite(values)])


def numeric_summary(values: Any, edges: np.ndarray) -> NumericSummary:
    """The summary of numeric values (NaN / None missing), row by row."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    array = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    present = array[~np.isnan(array)]
    index = np.searchsorted(edges, present, side="right")  # edges <= x: as SQL's INTERVAL
    size = len(edges) + 1
    counts = np.bincount(index, minlength=size).astype(np.int64)
    sums = np.bincount(index, weights=present, minlength=size).astype(float)
    return NumericSummary(edges, counts, sums, int(array.size - present.size))


def categorical_summary(values: pd.Series) -> CategoricalSummary:
    """The summary of a categorical column, row by row (values compared as text)."""
    filled = values.astype(object).where(values.notna(), MISSING).astype(str)
    return CategoricalSummary({str(k): int(v) for k, v in filled.value_counts().items()})


def shares(summary: CategoricalSummary) -> dict[str, float]:
    """Each category's share of the rows."""
    total = summary.rows
    return {k: v / total for k, v in summary.counts.items()} if total else {}


def summary_wasserstein(reference_sample: np.ndarray, summary: NumericSummary) -> float:
    """Wasserstein distance from the reference sample to the window (each bucket's values
    at their mean), in units of the reference's standard deviation."""
    filled = summary.counts > 0
    if reference_sample.size == 0 or not filled.any():
        return float("nan")
    means = summary.sums[filled] / summary.counts[filled]
    distance = float(
        wasserstein_distance(reference_sample, means, v_weights=summary.counts[filled])
    )
    scale = float(np.std(reference_sample))
    return distance / scale if scale > 0 else (0.0 if distance == 0 else float("inf"))


def summary_distance(
    name: str, ref: dict[str, Any], summary: NumericSummary | CategoricalSummary
) -> FeatureDistance:
    """`stats.feature_distance` from a window's summary instead of its rows."""
    if isinstance(summary, NumericSummary):
        sample = np.asarray(ref["sample"], dtype=float)
        value = summary_wasserstein(sample, summary)
        missing = summary.missing / summary.rows if summary.rows else 0.0
        psi_edges = np.asarray(ref["edges"], dtype=float)
        # bucket i >= 1 starts at edges[i-1]: its PSI bin is the PSI edges at or below that
        lower = np.concatenate([[-np.inf], summary.edges])
        bins = np.searchsorted(psi_edges, lower, side="right")
        cur = np.bincount(bins, weights=summary.counts, minlength=len(psi_edges) + 1)
        cur = cur / summary.present if summary.present else cur
        ref_bins = np.searchsorted(psi_edges, sample, side="right")
        expected = np.bincount(ref_bins, minlength=len(psi_edges) + 1) / max(sample.size, 1)
        return FeatureDistance(name, "numeric", "normed_wasserstein", value,
                               psi(expected, cur), ref["missing_rate"], missing, 0.0)  # fmt: skip
    cur_shares = shares(summary)
    ref_shares = ref["shares"]
    unseen = sum(v for k, v in cur_shares.items() if k not in ref_shares and k != MISSING)
    keys = sorted(set(ref_shares) | set(cur_shares))
    p = np.array([ref_shares.get(k, 0.0) for k in keys])
    q = np.array([cur_shares.get(k, 0.0) for k in keys])
    missing = cur_shares.get(MISSING, 0.0)
    return FeatureDistance(
        name, "categorical", "jensen_shannon", js_distance(ref_shares, cur_shares), psi(p, q),
        ref["missing_rate"], missing, float(unseen),
    )  # fmt: skip
