"""The benchmarks' verdict on issue 19's goals: met, missed by how much, or not measured,
in the direction each goal points (a ratio to reach, a cost to stay under), and which of
a run's figures each benchmark judges."""

from __future__ import annotations

import math

from benchmarks.goals import P2, P4, P5_TIME, verdict
from benchmarks.monitor_run import monitor_goals
from benchmarks.serving.serving_throughput import serving_goals


def test_a_goal_to_reach_is_met_at_or_above_its_target() -> None:
    assert verdict(P2, 0.8).endswith("**met**")
    assert verdict(P2, 0.2).endswith("**missed** by 75%")


def test_a_cost_to_stay_under_is_missed_above_its_target() -> None:
    assert "(target <= 15 µs): **met**" in verdict(P4, 11.8)
    assert verdict(P4, 30.0).endswith("**missed** by 100%")
    assert verdict(P5_TIME, 23.2, "10,000,000 rows").endswith("**met** (10,000,000 rows)")


def test_a_figure_the_run_did_not_take_is_said_so() -> None:
    assert "not measured in this run" in verdict(P2, math.nan)


def test_the_monitor_is_judged_at_one_bound_on_its_largest_and_smallest_windows() -> None:
    # (size, max_rows_read, seconds per run, peak MiB per run), as monitor_run collects them
    results = [
        (100_000, 200_000, [5.0], [900.0]),
        (100_000, 100_000, [4.0], [700.0]),
        (10_000_000, 200_000, [40.0], [950.0]),
        (10_000_000, 100_000, [20.0], [710.0]),
    ]
    time_line, memory_line = monitor_goals(results)
    assert "40.00 s" in time_line and "**missed**" in time_line  # the first bound given
    assert "1.06x" in memory_line and "**met**" in memory_line  # 950 / 900, same bound
    with_view = [*results, (100_000, None, [6.0], [727.0]), (10_000_000, None, [16.5], [727.0])]
    time_line, memory_line = monitor_goals(with_view)
    assert "16.50 s" in time_line and "**met**" in time_line  # the view's own bound
    assert "1.00x" in memory_line
    time_line, memory_line = monitor_goals([(1_000_000, None, [12.0], [700.0])])
    assert "not measured" in time_line and "not measured" in memory_line  # nothing to judge


def test_serving_judges_p3_only_at_the_batch_size_it_is_set_at() -> None:
    def runs(rps: float, p99: float, records: float, sustained: float, cpu_ms: float) -> dict:
        single = {"rps": rps, "p99_ms": p99}
        batch = {"records_per_s": records, "sustained_per_s": sustained,
                 "cpu_ms_per_record": cpu_ms}  # fmt: skip
        return {"single": [single], "batch": [batch]}

    results = {
        "async": runs(1_200, 30.0, 30_000, 20_000, 0.044),
        "off": runs(1_500, 20.0, 150_000, 150_000, 0.0099),
        "mlflow": runs(200, 150.0, 100_000, 100_000, 0.013),
    }
    p1, p1_tail, p2, p3, p3_cpu = serving_goals(results, 1.5, 1000)
    assert "6.00x" in p1 and "**met**" in p1
    assert "1.50x" in p1_tail and "**missed** by 25%" in p1_tail
    assert "0.13x" in p2 and "**missed**" in p2
    assert "1.50x" in p3 and "**met**" in p3
    assert "6.60x" in p3_cpu and "**missed**" in p3_cpu
    *_, p3, p3_cpu = serving_goals(results, 1.5, 100)
    assert "not measured" in p3 and "not measured" in p3_cpu
