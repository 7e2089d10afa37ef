"""Step 5 (gate 3): the candidate must load and answer exactly as serving will use it.

`check_model` is the one "fit to serve" check: the pipeline runs it on the candidate before
promotion and the service runs it on every champion before swapping it in. It feeds
records through serving's fast path (`features.records.model_rows` + `Predictor.answer`)
and through `Predictor.predict`, and refuses a model of the wrong kind, wrong or
non-finite answers, or two paths that disagree.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.predictor import Predictor, answer_problems, kind_problems
from ctloop.features.records import model_rows, sample_records
from ctloop.features.view import FeatureView
from ctloop.training.run import InfraCheckError, Run

log = logging.getLogger(__name__)


def check_model(
    view: FeatureView, predictor: Predictor, records: Sequence[dict[str, Any]], threads: int = 1
) -> list[str]:
    """What is wrong with a model's answers on these records (empty: fit to serve)."""
    problems = kind_problems(view, predictor)
    if problems:
        return problems
    fast = predictor.answer(model_rows(view, records), thread_count=threads)
    problems += answer_problems(view, fast, len(records))
    reference = predictor.predict(pd.DataFrame.from_records(list(records)))
    a = fast.values if view.label.is_regression else fast.proba
    b = reference.values if view.label.is_regression else reference.proba
    if a is None or b is None or a.shape != b.shape or not np.allclose(a, b, atol=1e-9):
        problems.append("the serving fast path disagrees with Predictor.predict")
    return problems


def _records(view: FeatureView, sample: pd.DataFrame) -> list[dict[str, Any]]:
    """Stored feature rows as a caller would send them (missing -> None)."""
    rows = sample[view.feature_names].astype(object)
    return rows.where(rows.notna(), None).to_dict(orient="records")


def infra_check(
    run: Run, version: str, store_url: str | None = None, sample_rows: int = 64
) -> dict[str, Any]:
    """Step 5 (gate 3): load the candidate as serving does and answer the newest stored
    rows of the run's window plus the view's edge cases through `check_model`."""
    registry = run.registry().activate()  # `models:/` URIs resolve in this registry
    name = run.view.name
    info = registry.version(name, version)
    try:
        start = time.perf_counter()
        predictor = Predictor.load(run.view, info.uri, info.version)
        load_s = time.perf_counter() - start
        store = run.store(store_url)
        try:
            # the newest rows of the run's own window: what the model will meet first
            first_day = run.as_of - dt.timedelta(days=run.window_days)
            sample = store.latest_features(run.view, run.as_of, sample_rows, since=first_day)
        finally:
            store.dispose()
        if sample.empty:
            raise InfraCheckError(
                f"no feature rows in the window [{first_day}, {run.as_of}) to query the model with"
            )
        edge_cases = sample_records(run.view)
        records = _records(run.view, sample) + edge_cases
        start = time.perf_counter()
        problems = check_model(run.view, predictor, records)
        predict_ms = (time.perf_counter() - start) * 1000
        if problems:
            raise InfraCheckError("; ".join(problems))
    except InfraCheckError as exc:
        registry.set_tags(
            name, version, {"gate.infra": "failed", "gate.infra.reason": str(exc)[:400]}
        )
        raise
    except Exception as exc:  # any failure to load or predict is the finding itself
        registry.set_tags(
            name, version, {"gate.infra": "failed", "gate.infra.reason": repr(exc)[:400]}
        )
        raise InfraCheckError(f"version {version} failed to load or predict: {exc!r}") from exc
    registry.set_tags(name, version, {"gate.infra": "passed"})
    result = {"version": version, "load_seconds": round(load_s, 3),
              "predict_ms": round(predict_ms, 2), "rows": len(sample),
              "edge_cases": len(edge_cases)}  # fmt: skip
    log.info("infra check passed: %s", result)
    return result
