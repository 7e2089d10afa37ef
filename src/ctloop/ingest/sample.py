"""Real tabular datasets shipped inside scikit-learn, written out as the files users bring.

`breast_cancer` (binary), `wine` (multiclass) and `diabetes` (regression) are bundled
with scikit-learn, so nothing is downloaded. Each is written as one CSV with the source's
own column names (`mean radius`, `od280/od315_of_diluted_wines`), an entity id, event
dates spread over a period and a label that arrives some days after its event date: the
shape of a real export, which `ctloop import` and the matching view in `examples/views/`
read without any hand editing. The README's "Bring your own data" walkthrough and the
any-task end-to-end tests use exactly these files.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn.datasets


@dataclass(frozen=True)
class Sample:
    """One bundled dataset: its loader, the label column's name and its kind."""

    name: str
    loader: str
    entity: str
    label: str
    kind: str  # binary / multiclass / regression


SAMPLES = {
    s.name: s
    for s in (
        Sample("breast_cancer", "load_breast_cancer", "Patient ID", "Diagnosis", "binary"),
        Sample("wine", "load_wine", "Lot", "Cultivar", "multiclass"),
        Sample("diabetes", "load_diabetes", "Patient", "Progression", "regression"),
    )
}


def sample_frame(
    name: str,
    start: dt.date = dt.date(2026, 1, 1),
    days: int = 30,
    label_delay_days: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """The dataset as a real export: shuffled rows spread evenly over `days` event dates
    from `start`, each label arriving `label_delay_days` later at 06:00 UTC (ISO 8601)."""
    if name not in SAMPLES:
        raise KeyError(f"unknown sample '{name}' (one of {', '.join(SAMPLES)})")
    sample = SAMPLES[name]
    data = getattr(sklearn.datasets, sample.loader)()
    frame = pd.DataFrame(data.data, columns=list(data.feature_names))
    if sample.kind == "regression":
        label = pd.Series(np.asarray(data.target, dtype=float))
    else:
        label = pd.Series(np.asarray(data.target_names)[data.target])
    order = np.random.default_rng(seed).permutation(len(frame))
    frame = frame.iloc[order].reset_index(drop=True)
    label = label.iloc[order].reset_index(drop=True)
    n = len(frame)
    day_index = (np.arange(n) * days) // n
    event = pd.to_datetime(start) + pd.to_timedelta(day_index, unit="D")
    arrived = event + pd.Timedelta(days=label_delay_days, hours=6)
    out = pd.DataFrame({sample.entity: [f"{name[:3]}-{i:05d}" for i in range(n)],
                        "Event Date": event.strftime("%Y-%m-%d")})  # fmt: skip
    out = pd.concat([out, frame], axis=1)
    out[sample.label] = label
    out["arrived_at"] = arrived.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def write_sample(name: str, path: str | Path, **kwargs: int | dt.date) -> Path:
    """Write `sample_frame(name, ...)` as CSV and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_frame(name, **kwargs).to_csv(path, index=False)  # type: ignore[arg-type]
    return path
