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
