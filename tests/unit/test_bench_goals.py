"""The benchmarks' verdict on issue 19's goals: met, missed by how much, or not measured,
in the direction each goal points (a ratio to reach, a cost to stay under)."""

from __future__ import annotations

import math

from benchmarks.goals import P2, P4, P5_TIME, verdict


def test_a_goal_to_reach_is_met_at_or_above_its_target() -> None:
    assert verdict(P2, 0.8).endswith("**met**")
    assert verdict(P2, 0.2).endswith("**missed** by 75%")


def test_a_cost_to_stay_under_is_missed_above_its_target() -> None:
    assert "(target <= 15 µs): **met**" in verdict(P4, 11.8)
    assert verdict(P4, 30.0).endswith("**missed** by 100%")
    assert verdict(P5_TIME, 23.2, "10,000,000 rows").endswith("**met** (10,000,000 rows)")


def test_a_figure_the_run_did_not_take_is_said_so() -> None:
    assert "not measured in this run" in verdict(P2, math.nan)
