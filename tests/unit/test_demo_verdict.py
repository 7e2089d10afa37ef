"""The demo's judgement of its own run, on made-up day records: which link of the loop
broke, and the demo's refusal to clear a folder it did not make. Running the demo itself
is `tests/e2e/test_demo.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ctloop.dev.demo import DayRecord, DemoConfig, prepare_folder, verdict
from ctloop.errors import CtloopError


def _day(day: str, drifting: bool, **kw: object) -> DayRecord:
    return DayRecord(day=day, drifting=drifting, answered=800, **kw)  # type: ignore[arg-type]


def test_verdict_names_the_broken_link(tmp_path: Path) -> None:
    config = DemoConfig(out=tmp_path, days=6, drift_day=2)
    healthy = [
        _day("d0", False, served_versions=["1"], served_accuracy=0.9, static_accuracy=0.9),
        _day("d1", False, served_versions=["1"], served_accuracy=0.9, static_accuracy=0.9),
        _day("d2", True, served_versions=["1"], monitor_status="decay", triggered=True,
             ct_version="2", ct_promoted=True, served_accuracy=0.5, static_accuracy=0.5),
        _day("d3", True, served_versions=["2"], served_accuracy=0.8, static_accuracy=0.5,
             oracle_accuracy=0.81),
        _day("d4", True, served_versions=["2"], served_accuracy=0.8, static_accuracy=0.5,
             oracle_accuracy=0.81),
        _day("d5", True, served_versions=["2"], served_accuracy=0.8, static_accuracy=0.5,
             oracle_accuracy=0.81),
    ]  # fmt: skip
    assert verdict(config, healthy, 4800, 4800, "1")["closed"] is True

    lost = verdict(config, healthy, 4800, 4799, "1")
    assert lost["closed"] is False
    assert [k for k, ok in lost["checks"].items() if not ok] == ["every answer logged"]

    never_swapped = [
        DayRecord(**{**r.__dict__, "served_versions": ["1"], "ct_promoted": False,
                     "served_accuracy": r.static_accuracy})
        for r in healthy
    ]  # fmt: skip
    failed = {k for k, ok in verdict(config, never_swapped, 4800, 4800, "1")["checks"].items()
              if not ok}  # fmt: skip
    assert failed == {"drift-triggered model promoted", "drift-triggered model served",
                      "live accuracy recovered", "served within 0.02 of the oracle"}  # fmt: skip

    lagging = [DayRecord(**{**r.__dict__, "served_accuracy": 0.75}) if r.drifting and
               r.day != "d2" else r for r in healthy]  # fmt: skip
    checks = verdict(config, lagging, 4800, 4800, "1")["checks"]
    assert [k for k, ok in checks.items() if not ok] == ["served within 0.02 of the oracle"]

    false_alarm = [DayRecord(**{**healthy[0].__dict__, "triggered": True}), *healthy[1:]]
    checks = verdict(config, false_alarm, 4800, 4800, "1")["checks"]
    assert checks["no false alarm before drift"] is False


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(CtloopError, match="not made by the demo"):
        prepare_folder(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
