"""The demo's world: its settings, its folder, its copy of the view and its environment.

The demo view is a copy of the real one with a short window, one day of label delay, no
cooldown and fewer boosting rounds, so each CT run takes seconds; every child process
(the DAG runner, `bentoml serve`) loads that copy and the embedded stores under the demo
folder, never a developer's own settings.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ctloop.errors import CtloopError

MARKER = ".ctloop-demo"
SOURCE_VIEW = "credit_score"

# The demo copy of the view: a short window, labels a day late, no cooldown, small models.
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "training": {"window_days": 14, "drift_window_days": 3, "validation_days": 1,
                 "label_delay_days": 1, "iterations": 150, "early_stopping_rounds": 20},
    "gates.data": {"min_rows": 1000, "min_validation_rows": 300},
    "drift": {"min_rows": 400, "min_labelled_rows": 300, "accuracy_window_days": 14,
              "cooldown_hours": 0},
}  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    """The simulated world: how much history, how many days of traffic, when drift starts."""

    out: Path
    start: dt.date = dt.date(2026, 3, 1)
    history_days: int = 14
    days: int = 12
    drift_day: int = 3
    rows_per_day: int = 800
    seed: int = 2026
    workers: int = 2
    min_recovery: float = 0.05
    oracle_tolerance: float = 0.02
    # direct: a blessed retrain is champion at once; shadow: it goes on a shadow trial and
    # the monitor's live gate promotes or drops it once labels land
    rollout: str = "direct"

    def __post_init__(self) -> None:
        """Refuse a world in which the loop cannot be seen to close."""
        if self.days < 4 or not 1 <= self.drift_day < self.days - 2:
            raise CtloopError("demo: need days >= 4 and 1 <= drift_day < days - 2")
        if self.rows_per_day < 500:
            raise CtloopError("demo: rows_per_day must be at least 500 (the monitor's minimum)")
        if self.rollout not in ("direct", "shadow"):
            raise CtloopError(f"demo: rollout must be direct or shadow, not {self.rollout!r}")
        if self.rollout == "shadow" and self.oracle_tolerance == 0.02:
            # the live gate waits a day for the labels of the first shadowed traffic, so the
            # safer path recovers later: the served model trails the oracle longer
            object.__setattr__(self, "oracle_tolerance", 0.05)


@dataclass
class DayRecord:
    """What happened on one simulated day."""

    day: str
    drifting: bool
    answered: int = 0
    served_versions: list[str] = field(default_factory=list)
    labels_landed: int = 0
    monitor: str = ""
    monitor_status: str = ""
    triggered: bool = False
    ct_version: str | None = None
    ct_promoted: bool = False
    ct_trial: bool = False  # the retrain went on a shadow trial instead
    scheduled_version: str | None = None
    scheduled_promoted: bool = False
    scheduled_trial: bool = False  # the scheduled candidate went on a shadow trial
    scheduled_skipped: str | None = None  # why the daily run did not run
    live_gate: str | None = None  # the live gate's decision at this day's check
    gate_promoted: str | None = None  # the version the live gate promoted at this check
    served_accuracy: float | None = None
    static_accuracy: float | None = None
    oracle_accuracy: float | None = None


def prepare_folder(out: Path) -> None:
    """A fresh demo folder; refuses to wipe a folder the demo did not make."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise CtloopError(f"demo: {out} exists and was not made by the demo; pick --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `ctloop demo`; deleted by the next demo run\n")


def write_demo_view(source: Path, target_dir: Path, rollout: str = "direct") -> Path:
    """Copy the view file with the demo's overrides; the copy is what every process loads."""
    data = yaml.safe_load(source.read_text())
    if rollout == "shadow":  # a day of labels (800 requests) is enough for the gate
        data["rollout"] = {"mode": "shadow", "min_labelled_pairs": 300, "max_trial_days": 4}
    for path, values in DEMO_OVERRIDES.items():
        node = data
        for key in path.split("."):
            node = node.setdefault(key, {})
        node.update(values)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / source.name
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def demo_env(out: Path, root: Path, port: int, token: str, workers: int) -> dict[str, str]:
    """One environment for every child: embedded stores under `out`, serving on `port`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_")) and k != "FEATURE_STORE_URL"
    }
    env.update(
        {
            "CTLOOP_DATA_DIR": str(out),
            "CTLOOP_FEATURES_DIR": str(out / "features"),
            "FEATURE_STORE_URL": f"sqlite:///{out / 'feature_store.db'}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
            "CTLOOP_MLFLOW_ARTIFACT_ROOT": str(out / "mlartifacts"),
            "CTLOOP_SERVING_URL": f"http://127.0.0.1:{port}",
            "CTLOOP_ADMIN_TOKEN": token,
            "CTLOOP_SERVING_WORKERS": str(workers),
            "CTLOOP_SERVING_POLL_SECONDS": "5",
            "CTLOOP_SERVING_LOG_FLUSH_SECONDS": "0.5",
            "BENTOML_HOME": str(out / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "GIT_PYTHON_REFRESH": "quiet",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
