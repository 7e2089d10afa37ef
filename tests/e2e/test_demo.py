"""`make demo` as a newcomer runs it: the real CLI, real Airflow, a real `bentoml serve`.

The demo checks its own loop (drift found, drift-triggered model promoted and served,
every answer logged, live accuracy recovered) and exits 1 otherwise; this test runs it
end to end on the embedded default and reads what it wrote. The verdict logic is tested
on its own in `tests/unit/test_demo_verdict.py`, so a broken link is reported by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT


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


@pytest.mark.slow
def test_make_demo_through_a_shadow_trial_and_the_live_gate(tmp_path: Path) -> None:
    """`make demo ROLLOUT=shadow`: the drift retrain goes on a shadow trial (the caller
    keeps getting the old champion meanwhile), the monitor's live gate promotes it once
    the shadowed traffic's labels land, and the timeline says so; the loop still closes."""
    out = tmp_path / "demo"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CTLOOP_", "MLFLOW_", "AIRFLOW")) and k != "FEATURE_STORE_URL"
    }
    env["CTLOOP_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "ctloop.cli", "demo", "--out", str(out), "--rollout", "shadow"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    report = f"{done.stdout[-5000:]}\n{done.stderr[-5000:]}"
    assert done.returncode == 0, report
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["checks"]["drift retrain promoted by the live gate"] is True, report
    timeline = summary["timeline"]
    trial = next(d for d in timeline if d["triggered"] and d["ct_trial"])
    gate = next(d for d in timeline if d["gate_promoted"] == trial["ct_version"])
    i, k = timeline.index(trial), timeline.index(gate)
    assert k > i, "the live gate decided before the trial's traffic was labelled"
    # until the gate's decision callers got the old champion, afterwards the new one
    assert all(trial["ct_version"] not in d["served_versions"] for d in timeline[i : k + 1])
    assert timeline[k + 1]["served_versions"] == [trial["ct_version"]]
    assert gate["live_gate"].startswith(f"v{trial['ct_version']} promoted (better: ")
    assert summary["answered"] == summary["logged"] == 12 * 800  # shadow rows not counted
    assert f"live gate: v{trial['ct_version']} promoted" in done.stdout
