"""What one continuous-training run is about, and the errors its steps raise.

Every step (`trainset`, `register`, `modelgate`, `infra`, `promotion`) takes a `Run`, so
the CLI, the Airflow glue and the tests build the same value and nothing else travels
between steps but the training set's fingerprint and the version number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView, load_view
from ctloop.registry import Registry
from ctloop.settings import Settings, get_settings, project_root
from ctloop.store.features import FeatureStore, to_date

TRIGGERS = ("schedule", "new-data", "manual", "drift")


class ModelGateError(CtloopError):
    """The candidate was not blessed; it stays registered but never becomes champion."""


class InfraCheckError(CtloopError):
    """The candidate failed to load or answer as served."""


class DataChangedError(CtloopError):
    """The training window's data changed between steps of one run."""


@dataclass(frozen=True)
class Run:
    """Who and what one pipeline run is about; every step receives it."""

    view: FeatureView
    as_of: dt.date
    trigger: str = "manual"
    reason: str = ""
    airflow_run_id: str = ""
    settings: Settings | None = None
    expected_drift: frozenset[str] = frozenset()  # features the monitor found drifted

    @classmethod
    def make(
        cls,
        view: str,
        as_of: str | dt.date | None = None,
        trigger: str = "manual",
        reason: str = "",
        airflow_run_id: str = "",
        expected_drift: Iterable[str] = (),
    ) -> Run:
        """A run from plain values (CLI arguments, Airflow params), checked on the way in."""
        if trigger not in TRIGGERS:
            raise CtloopError(f"trigger must be one of {', '.join(TRIGGERS)}, got '{trigger}'")
        day = to_date(as_of) if as_of else dt.datetime.now(dt.UTC).date()
        fv = load_view(view)
        drifted = frozenset(expected_drift)
        unknown = drifted - set(fv.feature_names)
        if unknown:
            raise CtloopError(
                f"drifted features not in view {fv.name}: {', '.join(sorted(unknown))}"
            )
        return cls(fv, day, trigger, reason, airflow_run_id, get_settings(), drifted)

    @property
    def window_days(self) -> int:
        """The training window: the view's, or its shorter drift window on drift runs."""
        training = self.view.training
        if self.trigger == "drift" and training.drift_window_days:
            return training.drift_window_days
        return training.window_days

    @property
    def cfg(self) -> Settings:
        """The run's settings (tests pass their own; otherwise the environment's)."""
        return self.settings or get_settings()

    def store(self, url: str | None = None) -> FeatureStore:
        """The feature store: the URL an orchestrator resolved (its connection), else the
        settings' store."""
        return FeatureStore.for_url(url or self.cfg.store_url, self.cfg)

    def registry(self) -> Registry:
        """The MLflow registry of the run's settings."""
        return Registry.from_settings(self.cfg)


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a training set: same rows and values, same fingerprint."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def git_commit() -> str:
    """The code version for lineage: $CTLOOP_GIT_COMMIT, else the checkout's HEAD."""
    if os.environ.get("CTLOOP_GIT_COMMIT"):
        return os.environ["CTLOOP_GIT_COMMIT"]
    root = project_root()
    if root is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()
