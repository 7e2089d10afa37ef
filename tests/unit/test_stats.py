"""Statistics computed by hand are checked against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ctloop.core.stats import (
    bin_shares,
    categorical_profile,
    feature_distance,
    js_distance,
    normed_wasserstein,
    numeric_profile,
    psi,
)
from ctloop.core.summary import (
    bucket_edges,
    categorical_summary,
    numeric_summary,
    summary_distance,
)


def test_normed_wasserstein_of_a_shift_is_the_shift_in_std_units() -> None:
    ref = np.linspace(-3, 3, 10_001)
    assert normed_wasserstein(ref, ref + 0.5) == pytest.approx(0.5 / ref.std(), rel=1e-6)
    assert normed_wasserstein(ref, ref) == 0.0
    assert math.isnan(normed_wasserstein(ref, np.array([])))


def test_js_distance_bounds() -> None:
    assert js_distance({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert js_distance({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    # JS divergence of (1,0) vs (.5,.5) in bits: 0.5*KL(p||m)+0.5*KL(q||m), m=(.75,.25)
    p_m = math.log2(1 / 0.75)
    q_m = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    expected = math.sqrt(0.5 * p_m + 0.5 * q_m)
    assert js_distance({"a": 1.0}, {"a": 0.5, "b": 0.5}) == pytest.approx(expected)


def test_psi_known_value() -> None:
    expected = np.array([0.5, 0.5])
    actual = np.array([0.6, 0.4])
    value = 0.1 * math.log(0.6 / 0.5) + (-0.1) * math.log(0.4 / 0.5)
    assert psi(expected, actual) == pytest.approx(value)
    assert psi(expected, expected) == 0.0


def test_bin_shares_and_profiles() -> None:
    assert bin_shares(np.array([0, 1, 2, 3]), [1.5]).tolist() == [0.5, 0.5]
    prof = numeric_profile(pd.Series([1.0, 2.0, None, 4.0]), np.random.default_rng(0))
    assert prof["missing_rate"] == 0.25
    assert prof["sample"] == [1.0, 2.0, 4.0]
    cat = categorical_profile(pd.Series(["a", "a", None, "b"]))
    assert cat["shares"] == {"a": 0.5, "__missing__": 0.25, "b": 0.25}


def test_feature_distance_unseen_share() -> None:
    ref = {"type": "categorical", **categorical_profile(pd.Series(["a", "b"] * 50))}
    dist = feature_distance("occupation", ref, pd.Series(["a"] * 70 + ["new"] * 30))
    assert dist.unseen_share == pytest.approx(0.3)
    assert dist.statistic == "jensen_shannon"
    assert dist.value > 0.3


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.5, 3.0])
@pytest.mark.parametrize("shape", ["normal", "skewed", "integers"])
def test_a_windows_summary_gives_the_row_distances(shift: float, shape: str) -> None:
    """The monitor measures drift on counts per bucket (`core.summary`), not rows: PSI,
    missing rate and the categorical statistics are the rows' exactly; the Wasserstein
    distance differs only inside buckets where the two distribution functions cross, by
    less than a bucket's width each (here within 0.5% of the reference's spread)."""
    rng = np.random.default_rng(3)
    draw = {
        "normal": lambda n: rng.normal(0, 1, n),
        "skewed": lambda n: rng.lognormal(0, 1, n),
        "integers": lambda n: rng.integers(18, 90, n).astype(float),
    }[shape]
    ref = numeric_profile(pd.Series(draw(20_000)), rng)
    values = pd.Series(draw(50_000) + shift * float(ref["std"]))
    values[rng.random(values.size) < 0.03] = np.nan
    exact = feature_distance("x", {"type": "numeric", **ref}, values)
    summary = numeric_summary(values, bucket_edges(ref))
    assert summary.rows == values.size and summary.missing == int(values.isna().sum())
    got = summary_distance("x", {"type": "numeric", **ref}, summary)
    assert got.value == pytest.approx(exact.value, abs=0.005)
    assert got.psi == pytest.approx(exact.psi, rel=1e-12, abs=1e-12)
    assert got.missing_rate_cur == exact.missing_rate_cur
    categories = pd.Series(rng.choice(["a", "b", "c", None], 5000, p=[0.5, 0.3, 0.15, 0.05]))
    cat_ref = {"type": "categorical", **categorical_profile(categories.iloc[:2000])}
    cat_exact = feature_distance("c", cat_ref, categories.iloc[2000:])
    cat_got = summary_distance("c", cat_ref, categorical_summary(categories.iloc[2000:]))
    assert (cat_got.value, cat_got.psi, cat_got.unseen_share, cat_got.missing_rate_cur) == (
        cat_exact.value, cat_exact.psi, cat_exact.unseen_share, cat_exact.missing_rate_cur
    )  # fmt: skip


def test_values_on_a_bucket_edge_count_in_the_bucket_above_as_sql_interval_does() -> None:
    edges = np.array([1.0, 2.0, 3.0])
    summary = numeric_summary(pd.Series([0.5, 1.0, 1.5, 2.0, 3.0, 9.0, None]), edges)
    assert summary.counts.tolist() == [1, 2, 1, 2] and summary.missing == 1
    assert summary.sums.tolist() == [0.5, 2.5, 2.0, 12.0]
