"""What a monitor check found and decided: the record the check builds, the drift report
stores and the HTML report renders.

Its own module so that the check, the report table and the HTML page all depend on it and
not on each other (the page used to import the check that imported the page).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

OK, DRIFT, DECAY, NOT_ENOUGH, NO_CHAMPION = "ok", "drift", "decay", "not_enough_data", "no_champion"


@dataclass
class Finding:
    """One row of the drift report: a statistic, its limit and the verdict, stored as
    they were measured so a later reader can judge the call."""

    kind: str  # data / prediction / accuracy / dataset
    feature: str
    statistic: str
    value: float | None
    threshold: float | None
    drifted: bool


@dataclass
class MonitorResult:
    """What one monitor check found and decided."""

    check_id: str
    view: str
    model_version: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int
    labelled_rows: int = 0
    status: str = OK
    findings: list[Finding] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # reported beside the status, never a reason to retrain (training-serving skew)
    notes: list[str] = field(default_factory=list)
    live_metrics: dict[str, float] = field(default_factory=dict)
    onset: str | None = None  # estimated first day of a concept change (ISO), on decay
    onset_found: str | None = None  # the newest labelled day that showed it
    # a window over `drift.max_rows_read`: the rows its statistics were computed on (a
    # sample in blocks of row ids); `rows` is then the window's estimated size
    sampled_rows: int | None = None
    # the rows drift was measured on when the database summarized them (every row of the
    # window, or its own sample of `max_rows_summarized`); None: on the rows read
    drift_rows: int | None = None

    @property
    def retrain(self) -> bool:
        """Drift and decay ask for a retrain; the other statuses do not."""
        return self.status in (DRIFT, DECAY)

    def summary(self) -> str:
        """One line for the task log."""
        every = self.drift_rows is not None and self.drift_rows == self.rows
        exact = self.sampled_rows is None or every
        size = f"{self.rows}" if exact else f"~{self.rows}"
        head = (
            f"{self.view} v{self.model_version}: {self.status.upper()} on {size} "
            f"predictions {self.window_start:%Y-%m-%d %H:%M} .. {self.window_end:%Y-%m-%d %H:%M}"
        )
        if self.sampled_rows is not None and self.drift_rows is not None:
            drift = "every row" if every else f"a sample of {self.drift_rows}"
            head += (f" (drift on {drift}; live accuracy and skew on a sample of "
                     f"{self.sampled_rows})")  # fmt: skip
        elif self.sampled_rows is not None:
            head += f" (statistics on a sample of {self.sampled_rows})"
        said = self.reasons + self.notes
        return head + (f" ({'; '.join(said)})" if said else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived decision and drifted features spelled out."""
        out = asdict(self)
        out["window_start"] = self.window_start.isoformat()
        out["window_end"] = self.window_end.isoformat()
        out["retrain"] = self.retrain
        out["drifted_features"] = [
            f.feature for f in self.findings if f.kind == "data" and f.drifted
        ]
        return out


def findings_json(result: MonitorResult) -> str:
    """The findings as compact JSON, for a DAG run's conf."""
    data = result.to_dict()
    data["findings"] = [f for f in data["findings"] if f["drifted"]]
    return json.dumps(data, default=str)
