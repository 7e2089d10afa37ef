"""ctloop's own Prometheus metrics, next to BentoML's on the same `/metrics` endpoint.

BentoML serves `/metrics` from prometheus_client's multiprocess collector: each worker
writes its samples to files under `PROMETHEUS_MULTIPROC_DIR` (set by `bentoml serve`
before it starts the workers) and any worker answering a scrape sums them all (BentoML
#2148, #5056: metrics made with a plain in-process registry show only the one worker that
happens to answer). So these metrics are created lazily inside the worker, after BentoML
set that directory, never at import time (the arbiter imports this module too), and gauges
declare how workers combine: `livesum` for queue depth, `liveall` (one sample per live pid)
for the model version each worker serves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metrics:
    """The metric objects of one worker process, created together so the hooks below
    never meet a half-registered set."""

    log_rows: Any
    log_write_errors: Any
    log_pending: Any
    predictions: Any
    model_events: Any
    model_version: Any
    batch_records: Any
    view: str

    def count_log(self, event: str, n: int) -> None:
        """Hook for `PredictionLogWriter(on_count=...)`."""
        if event == "write_errors":
            self.log_write_errors.inc(n)
        else:
            self.log_rows.labels(outcome=event).inc(n)

    def model_event(self, what: str, version: str) -> None:
        """Hook for `ModelManager(on_event=...)`."""
        self.model_events.labels(event=what).inc()
        if what == "swapped":
            gauge = self.model_version.labels(view=self.view)
            try:
                gauge.set(float(version))
            except ValueError:
                gauge.set(-1)


@functools.cache
def worker_metrics(view: str) -> Metrics:
    """This process's metrics, created on first use (after the multiprocess dir is set)."""
    # Deferred: prometheus_client fixes its value class from PROMETHEUS_MULTIPROC_DIR when
    # first imported, which must happen in the worker, after `bentoml serve` set it.
    from prometheus_client import Counter, Gauge  # worker only: see above

    return Metrics(
        log_rows=Counter(
            "ctloop_prediction_log_rows",
            "Prediction log rows by outcome: queued, written, spilled, replayed, duplicates, "
            "failed (lost: should stay 0), quarantined (damaged spill lines kept aside)",
            ["outcome"],
        ),
        log_write_errors=Counter(
            "ctloop_prediction_log_write_errors", "Failed prediction log insert attempts"
        ),
        log_pending=Gauge(
            "ctloop_prediction_log_pending",
            "Prediction log rows waiting in memory, summed over live workers",
            multiprocess_mode="livesum",
        ),
        predictions=Counter(
            "ctloop_predictions",
            "Records answered, by endpoint and model version",
            ["endpoint", "model_version"],
        ),
        model_events=Counter(
            "ctloop_model_events",
            "Model refresh outcomes: swapped, load_error, registry_error",
            ["event"],
        ),
        model_version=Gauge(
            "ctloop_model_version",
            "Registered model version each live worker serves (one sample per pid)",
            ["view"],
            multiprocess_mode="liveall",
        ),
        batch_records=Counter(
            "ctloop_batch_records",
            "Batch records by how they were validated: columnar (the plain case, checked "
            "a column at a time) or request_model (pydantic, one record at a time)",
            ["validation"],
        ),
        view=view,
    )
