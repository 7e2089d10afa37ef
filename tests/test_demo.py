"""`make demo` as a newcomer runs it: the real CLI, real Airflow, a real `bentoml serve`.

The demo checks its own loop (drift found, drift-triggered model promoted and served,
every answer logged, live accuracy recovered) and exits 1 otherwise; this test runs it
end to end on the embedded default and reads what it wrote. The verdict logic is also
tested on its own, so a broken link is reported by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctloop.dev.demo import DayRecord, DemoConfig, verdict
from tests.conftest import ROOT


@pytest.mark.slow
def test_make_demo_closes_the_loop(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CTLOOP_", "MLFLOW_", "AIRFLOW")) and k != "FEATURE_STORE_URL"
    }
    env["CTLOOP_DATA_DIR"] = str(tmp_path / "data")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", "demo", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    report = f"{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    assert done.returncode == 0, report
    assert "the loop closed." in done.stdout
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["closed"] is True and all(summary["checks"].values())
    assert summary["answered"] == summary["logged"] == 12 * 800
    timeline = summary["timeline"]
    before = [d for d in timeline if not d["drifting"]]
    after = [d for d in timeline if d["drifting"]]
    assert before and after and not any(d["triggered"] for d in before)
    promoted = [d for d in timeline if d["ct_promoted"]]
    assert promoted, "no drift-triggered model was promoted"
    new_version = promoted[0]["ct_version"]
    later = timeline[timeline.index(promoted[0]) + 1 :]
    assert later and all(d["served_versions"] == [new_version] for d in later[:1])
    assert summary["served_accuracy_last_days"] > summary["static_accuracy_last_days"] + 0.05
    # the schedule kept retraining after the drift, and the served model kept up with a
    # model retrained each day on every label since the change
    assert any(d["scheduled_promoted"] for d in later)
    oracle = summary["oracle_accuracy_last_days"]
    assert oracle is not None and summary["served_accuracy_last_days"] >= oracle - 0.02
    assert "[ok] served within 0.02 of the oracle" in done.stdout
    png = out / "demo_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the timeline table and the checks are printed
    assert "2026-03-01" in done.stdout and "[ok] every answer logged" in done.stdout
    # the demo's Airflow kept its metadata in SQLite under the demo folder, never MariaDB
    assert (out / "airflow" / "airflow.db").is_file()


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
    from ctloop.dev.demo import prepare_folder
    from ctloop.errors import CtloopError

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(CtloopError, match="not made by the demo"):
        prepare_folder(tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
