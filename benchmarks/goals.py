"""Issue 19's goals, P1 to P5, judged by the benchmark run that measured them.

Each benchmark ends with the goals its own figures decide (the serving benchmark P1 to
P3, the log's P4, the monitor's P5), met or missed and by how much, so a run is read
against its targets without a calculator, and a figure is never compared with one taken
on another hour of a host whose speed moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """One target: `value` must be at least (or at most) `target`, in `unit`."""

    name: str
    what: str
    target: float
    at_least: bool
    unit: str = "x"


P1_THROUGHPUT = Goal("P1", "logged single-record req/s vs `mlflow models serve`", 4.0, True)
P1_TAIL = Goal("P1", "logged single-record p99 vs unlogged", 1.2, False)
P2 = Goal("P2", "sustained logged batch records/s vs unlogged", 0.8, True)
P3_BATCH = 1_000
"""P3 is set at batches of this many records (a smaller batch is not judged)."""
P3_THROUGHPUT = Goal("P3", "unlogged batch records/s vs `mlflow models serve`", 1.5, True)
P3_CPU = Goal("P3", "unlogged service CPU per batch record vs CatBoost's own predict", 3.0, False)
P4 = Goal("P4", "MariaDB server CPU per logged row (shipped path)", 15.0, False, " µs")
P5_TIME = Goal("P5", "one monitor check over 10M logged predictions", 30.0, False, " s")
P5_MEMORY = Goal("P5", "client peak memory, largest window vs smallest", 1.25, False)


def verdict(goal: Goal, value: float, note: str = "") -> str:
    """`- P2 what: 0.20x (target >= 0.8x): missed by 75%` (a markdown list item)."""
    sign = ">=" if goal.at_least else "<="
    if math.isnan(value):
        state = "not measured in this run"
    elif (value >= goal.target) if goal.at_least else (value <= goal.target):
        state = "**met**"
    else:
        state = f"**missed** by {abs(value / goal.target - 1):.0%}"
    tail = f" ({note})" if note else ""
    return (f"- {goal.name} {goal.what}: {value:.2f}{goal.unit} (target {sign} "
            f"{goal.target:g}{goal.unit}): {state}{tail}")  # fmt: skip
