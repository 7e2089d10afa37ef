"""Distribution statistics shared by the data gate (skew) and the drift monitor.

The reference of a model is a compact profile of its training data, saved with the model
in MLflow: per numeric feature a fixed sample of values (for the Wasserstein distance) and
quantile bin edges (for PSI); per categorical feature its category shares. Distances follow
Evidently's defaults for large windows: Wasserstein distance normed by the reference's
standard deviation for numeric features, Jensen-Shannon distance for categorical ones,
so thresholds mean the same thing in the gate and in the monitor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.stats import norm, wasserstein_distance

from ctloop.features.spec import MISSING as MISSING  # the view contract's marker
from ctloop.features.view import FeatureView

SAMPLE_SIZE = 5000
PSI_BINS = 10
_EPS = 1e-4


def numeric_profile(values: pd.Series, rng: np.random.Generator) -> dict[str, Any]:
    """Mean, spread, missing rate, quantile edges and a fixed-size sample of one column."""
    present = values.dropna().to_numpy(dtype=float)
    missing_rate = float(values.isna().mean()) if len(values) else 0.0
    if present.size == 0:
        return {"count": 0, "missing_rate": missing_rate, "sample": [], "edges": []}
    sample = rng.choice(present, size=min(SAMPLE_SIZE, present.size), replace=False)
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    return {
        "count": int(present.size),
        "missing_rate": missing_rate,
        "mean": float(present.mean()),
        "std": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "edges": edges.tolist(),
        "sample": np.sort(sample).tolist(),
    }


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    """Category shares (missing counted as its own category) and the missing rate."""
    filled = values.astype(object).where(values.notna(), MISSING)
    shares = filled.value_counts(normalize=True)
    return {
        "count": len(values),
        "missing_rate": float(values.isna().mean()) if len(values) else 0.0,
        "shares": {str(k): float(v) for k, v in shares.items()},
    }


def profile(view: FeatureView, frame: pd.DataFrame, seed: int = 0) -> dict[str, Any]:
    """The reference profile of a dataset: every feature, and the label when present."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"rows": len(frame), "features": {}}
    for feature in view.features:
        col = frame[feature.name]
        out["features"][feature.name] = (
            {"type": "numeric", **numeric_profile(col, rng)}
            if feature.is_numeric
            else {"type": "categorical", **categorical_profile(col)}
        )
    if view.label.name in frame.columns and view.label.is_regression:
        values = pd.to_numeric(frame[view.label.name], errors="coerce")
        out["label"] = {k: v for k, v in numeric_profile(values, rng).items() if k != "sample"}
    elif view.label.name in frame.columns:
        out["label"] = categorical_profile(frame[view.label.name])["shares"]
    return out


def normed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein distance in units of the reference's standard deviation."""
    if reference.size == 0 or current.size == 0:
        return math.nan
    scale = float(np.std(reference))
    distance = float(wasserstein_distance(reference, current))
    return distance / scale if scale > 0 else (0.0 if distance == 0 else math.inf)


def _aligned(ref: dict[str, float], cur: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(ref) | set(cur))
    return (
        np.array([ref.get(k, 0.0) for k in keys]),
        np.array([cur.get(k, 0.0) for k in keys]),
    )


def js_distance(ref: dict[str, float], cur: dict[str, float]) -> float:
    """Jensen-Shannon distance (base 2, so within [0, 1]) between two share tables."""
    p, q = _aligned(ref, cur)
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    return float(jensenshannon(p, q, base=2))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index over matching bins (shares), with a small floor."""
    e = np.clip(expected, _EPS, None)
    a = np.clip(actual, _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def bin_shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Shares of values in the bins cut by `edges` (len(edges) + 1 bins)."""
    if values.size == 0:
        return np.zeros(len(edges) + 1)
    idx = np.searchsorted(np.asarray(edges), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1) / values.size


NOISE_DRAWS = 100
NOISE_MAX_ROWS = 5_000  # beyond this the noise is computed here and scaled by sqrt(n)


def noise_floor(ref: dict[str, Any], n: int, z: float, seed: int = 0) -> float:
    """The distance that `n` rows drawn from the reference itself reach by chance.

    Fixed thresholds (Evidently's 0.1) are sized for thousands of rows; at 50 rows the
    sampling noise of a Wasserstein or Jensen-Shannon distance alone exceeds them, so
    traffic from the training distribution raises alarms (evidently #50, #509). This
    draws `NOISE_DRAWS` windows of `n` rows from the reference profile (its value sample,
    or its category shares) and returns mean + z * sd of their distances to it: the
    smallest shift a window of this size can tell from noise at the false-alarm rate that
    `z` encodes (mean + z * sd is a normal approximation of the upper tail; the distances
    are somewhat right-skewed, so it is a little lenient at very small windows). The
    live-window part shrinks as 1/sqrt(n), which sets the value for big windows.
    """
    if n <= 0:
        return math.inf
    rng = np.random.default_rng(seed)
    m = min(n, NOISE_MAX_ROWS)
    if ref["type"] == "numeric":
        sample = np.asarray(ref["sample"], dtype=float)
        if sample.size < 2:
            return 0.0
        draws = [normed_wasserstein(sample, rng.choice(sample, m)) for _ in range(NOISE_DRAWS)]
    else:
        shares = {k: float(v) for k, v in ref["shares"].items()}
        keys, p = list(shares), np.array(list(shares.values()))
        p = p / p.sum()
        draws = []
        for _ in range(NOISE_DRAWS):
            counts = rng.multinomial(m, p) / m
            draws.append(js_distance(shares, dict(zip(keys, counts, strict=True))))
    values = np.asarray([d for d in draws if math.isfinite(d)])
    if values.size == 0:
        return math.inf
    # the windows above come from the reference itself, which is also only a sample (S
    # rows): the live window and the reference each carry their own noise, so the
    # distance between two samples of one distribution is larger by sqrt(1 + n / S)
    size = len(ref["sample"]) if ref["type"] == "numeric" else int(ref.get("count") or 0)
    both = math.sqrt(1 + n / size) if size > 0 else 1.0
    return float((values.mean() + z * values.std()) * math.sqrt(m / n) * both)


def z_for(false_alarm_rate: float, tests: int) -> float:
    """The one-sided z of a per-test rate that keeps the whole check's false-alarm rate at
    `false_alarm_rate` across `tests` tests (Bonferroni)."""
    return float(norm.ppf(1 - false_alarm_rate / max(tests, 1)))


@dataclass(frozen=True)
class FeatureDistance:
    """How far one feature's current distribution is from its reference."""

    feature: str
    kind: str  # numeric / categorical
    statistic: str  # normed_wasserstein / jensen_shannon
    value: float
    psi: float
    missing_rate_ref: float
    missing_rate_cur: float
    unseen_share: float  # share of current values in categories the reference never saw


def feature_distance(name: str, ref: dict[str, Any], current: pd.Series) -> FeatureDistance:
    """Distance of a current column from its reference profile (see module docstring)."""
    missing_cur = float(current.isna().mean()) if len(current) else 0.0
    if ref["type"] == "numeric":
        cur = current.dropna().to_numpy(dtype=float)
        ref_sample = np.asarray(ref["sample"], dtype=float)
        value = normed_wasserstein(ref_sample, cur)
        edges = ref["edges"]
        stability = psi(bin_shares(ref_sample, edges), bin_shares(cur, edges))
        return FeatureDistance(
            name, "numeric", "normed_wasserstein", value, stability,
            ref["missing_rate"], missing_cur, 0.0,
        )  # fmt: skip
    cur_shares = categorical_profile(current)["shares"]
    ref_shares = ref["shares"]
    unseen = sum(v for k, v in cur_shares.items() if k not in ref_shares and k != MISSING)
    p, q = _aligned(ref_shares, cur_shares)
    return FeatureDistance(
        name, "categorical", "jensen_shannon", js_distance(ref_shares, cur_shares), psi(p, q),
        ref["missing_rate"], missing_cur, float(unseen),
    )  # fmt: skip
