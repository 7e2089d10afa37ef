"""The continuous-training pipeline as plain steps: extract, data gate, train, model gate,
infra check, promote — the names the CLI (`ctloop train`), the Airflow glue and the tests
call. Each step takes a `Run` and plain values and returns a JSON-able dict, so a step can
run in any worker: data travels through the feature store (checked by fingerprint),
artifacts through MLflow, and no filesystem is shared.

The steps live in their own modules (`trainset`, `register`, `modelgate`, `infra`,
`promotion`); this module adds the data gate's step and `run_all`, and names them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd

from ctloop.store.ctlock import CtLock, cli_holder
from ctloop.training.datagate import DataGateError, check_data
from ctloop.training.infra import check_model, infra_check, sample_records
from ctloop.training.modelgate import decide, evaluate
from ctloop.training.promotion import notify_serving, promote
from ctloop.training.register import model_signature, record_reuse, train
from ctloop.training.run import (
    TRIGGERS,
    DataChangedError,
    InfraCheckError,
    ModelGateError,
    Run,
    fingerprint,
    git_commit,
)
from ctloop.training.trainset import extract, load, training_window

__all__ = [
    "TRIGGERS",
    "DataChangedError",
    "DataGateError",
    "InfraCheckError",
    "ModelGateError",
    "Progress",
    "Run",
    "check_model",
    "decide",
    "evaluate",
    "extract",
    "fingerprint",
    "git_commit",
    "infra_check",
    "load",
    "model_signature",
    "notify_serving",
    "promote",
    "record_reuse",
    "run_all",
    "sample_records",
    "train",
    "training_window",
    "validate_data",
]

log = logging.getLogger(__name__)


def validate_data(
    run: Run, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 2 (gate 1): check the training set; raises DataGateError naming every failure."""
    trainset = load(run, store_url, expected_fingerprint)
    frame = trainset.frame
    registry = run.registry()
    champion = registry.champion(run.view.name)
    reference = registry.reference_profile(champion) if champion else None
    waiting = 0
    if len(frame) < run.view.gates.data.min_rows:
        store = run.store(store_url)
        try:
            waiting = store.waiting_labels(run.view, run.as_of, run.window_days)
        finally:
            store.dispose()
    report = check_data(
        run.view, frame, pd.Timestamp(run.as_of), reference, run.expected_drift, waiting
    )
    log.info(report.summary())
    if not report.passed:
        raise DataGateError(report)
    return {**report.to_dict(), "champion": champion.version if champion else None}


Progress = Callable[[str, dict[str, Any] | None], None]
"""Told `(step, None)` as a step starts and `(step, outcome)` as it ends; steps are named
as in `run_all`'s result: extract, data_gate, train, model_gate, infra_check, promote."""


def _no_progress(_step: str, _outcome: dict[str, Any] | None) -> None:
    """The default `Progress`: the DAG's task logs already say what each task does."""


def run_all(
    run: Run,
    store_url: str | None = None,
    force_promote: bool = False,
    progress: Progress = _no_progress,
    holder: str | None = None,
) -> dict[str, Any]:
    """All steps in order, as the DAG runs them; stops at the first gate that refuses.

    The whole run holds the view's CT lease (`ctloop.store.ctlock`): a second run of the
    same view, from the CLI or Airflow, fails at once naming the first (`holder` names
    this one; default: this CLI process).

    `progress` lets a caller that waits (`ctloop train`) say what is happening without
    knowing the order of the steps or when the model gate stops the run.
    """
    store = run.store(store_url)
    try:
        with CtLock(store).held(run.view.name, holder or cli_holder()):
            return _run_steps(run, store_url, force_promote, progress)
    finally:
        store.dispose()


def _run_steps(
    run: Run, store_url: str | None, force_promote: bool, progress: Progress
) -> dict[str, Any]:
    """`run_all`'s steps, under the lease."""

    def step(name: str, call: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        progress(name, None)
        outcome = call(*args)
        progress(name, outcome)
        return outcome

    summary = step("extract", extract, run, store_url)
    fp = summary["fingerprint"]
    out: dict[str, Any] = {"extract": summary}
    out["data_gate"] = step("data_gate", validate_data, run, store_url, fp)
    trained = step("train", train, run, store_url, fp)
    out["train"] = trained
    verdict = step("model_gate", evaluate, run, trained["version"], store_url, fp)
    out["model_gate"] = verdict
    if not verdict["blessed"] and not force_promote:
        out["promoted"] = False
        return out
    out["infra_check"] = step("infra_check", infra_check, run, trained["version"], store_url)
    forced = force_promote and not verdict["blessed"]
    out["promote"] = step("promote", partial(promote, force=forced), run, trained["version"])
    out["promoted"] = "challenger" not in out["promote"]  # else: on a live trial
    return out
