"""The champion as the service holds it: load, check, hot-swap, poll.

The model in use is one immutable `LoadedModel` behind a single attribute. A request reads
that attribute once and uses what it got to the end, so a swap (one reference assignment,
atomic in CPython) never mixes two versions inside a request, requests in flight finish on
the version they started with, and every answer and log row names that version.

A new champion is loaded and checked in the background while the old one keeps serving;
only a model that passes the same checks as the pipeline's infra check (classes, shapes,
finite probabilities that sum to one, known classes) and gives the same probabilities
through the service's list fast path as through `Predictor.predict` replaces it.
A model that fails stays rejected until the champion moves again (or an admin forces it),
so a bad version is not reloaded on every poll.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctloop.core.metrics import Output
from ctloop.core.predictor import Predictor
from ctloop.features.records import model_rows, sample_records
from ctloop.features.view import FeatureView
from ctloop.redact import redact
from ctloop.registry import Registry, VersionInfo, untrusted_reason
from ctloop.store.dates import utc_now
from ctloop.training.infra import check_model

log = logging.getLogger(__name__)

RECENT_RECORDS = 64
_INITIAL_RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version; never mutated, replaced whole on a swap."""

    predictor: Predictor
    info: VersionInfo
    loaded_at: dt.datetime
    run_metrics: dict[str, float] = field(default_factory=dict)
    threads: int = 1

    @property
    def version(self) -> str:
        """The registry version this model is, as answers and metrics report it."""
        return self.info.version

    def predict(self, view: FeatureView, records: Sequence[dict[str, Any]]) -> Output:
        """The answers for validated records: classes with probabilities in the view's class
        order, or values (regression)."""
        return self.predictor.answer(model_rows(view, records), thread_count=self.threads)

    def predict_frame(self, frame: Any) -> Output:
        """The answers for a batch already typed as the model's frame
        (`ctloop.core.columnar`): CatBoost reads a typed frame 4x faster than lists."""
        return self.predictor.answer(frame, thread_count=self.threads)


def freeze_heap() -> None:
    """Collect once, then put every object alive out of the collector's reach.

    A worker holds millions of long-lived objects (MLflow, pandas, SQLAlchemy, BentoML,
    the models) and Python's oldest-generation collection walks them all: measured at
    about 250 ms per pass on this project's worker, a stall of every request in flight,
    several times a minute under load (the shadow trial's allocations made it more
    frequent). Frozen objects are never walked again (`gc.freeze`, as Instagram's
    servers do); after a swap the old models are unfrozen and collected first, a pause
    paid once per promotion rather than under traffic.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelManager:
    """Loads the champion of one view, swaps in new champions, reports what it did."""

    def __init__(
        self,
        view: FeatureView,
        registry: Registry,
        *,
        poll_seconds: float = 30.0,
        signal_path: Path | None = None,
        model_threads: int = 1,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.view = view
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.signal_path = signal_path
        self.model_threads = model_threads
        self._on_event = on_event
        self.current: LoadedModel | None = None  # the one reference a swap assigns
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_RECORDS)
        self._lock = threading.Lock()  # one load at a time (poller, admin, signal)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rejected_version: str | None = None
        self.refused_version: str | None = None  # champion alias on an ungated version
        self.last_check_at: dt.datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None
        self.registry_ok: bool | None = None
        self.swaps = 0
        # a candidate on live trial (alias `challenger`): shadow-scored or a canary; loaded
        # and checked as the champion is, and never in the way of serving the champion
        self.challenger: LoadedModel | None = None
        self.rejected_challenger: str | None = None

    # ------------------------------------------------------------------ loading

    def refresh(self, reason: str, force: bool = False) -> dict[str, Any]:
        """Ask the registry for the champion; load, check and swap it in if it moved; then
        the same for the challenger.

        Never raises: a failure leaves the current model serving and is reported.
        """
        with self._lock:
            held = (self.current, self.challenger)
            outcome = self._refresh_champion(reason, force)
            self._refresh_challenger(reason)
            if self.current is not held[0] or self.challenger is not held[1]:
                freeze_heap()  # (identity: == would compare the models field by field)
            return outcome

    def _refresh_challenger(self, reason: str) -> None:
        """Follow the `challenger` alias: load a new one, drop one whose trial ended. A
        challenger that cannot be read, trusted, loaded or checked is simply not tried
        (logged once); the champion serves either way."""
        try:
            info = self.registry.challenger(self.view.name)
        except Exception:  # MLflow unreachable: keep trying what we have
            return
        held = self.challenger
        if info is None or (self.current is not None and info.version == self.current.version):
            if held is not None:
                log.info("live trial of %s version %s over (%s)", self.view.name, held.version,
                         reason)  # fmt: skip
            self.challenger = None
            return
        if (held is not None and held.version == info.version) or (
            info.version == self.rejected_challenger
        ):
            return
        problem = untrusted_reason(info)
        if problem is None:
            try:
                self.challenger = self._load(info)
                log.info("challenger %s version %s on trial (%s)", self.view.name, info.version,
                         info.tags.get("rollout", "shadow"))  # fmt: skip
                return
            except Exception as exc:  # a challenger that cannot answer is not tried
                problem = f"cannot load: {exc!r}"
        self.rejected_challenger = info.version
        self.challenger = None
        log.warning("challenger %s version %s not tried: %s", self.view.name, info.version,
                    redact(problem))  # fmt: skip

    def _refresh_champion(self, reason: str, force: bool) -> dict[str, Any]:
        """The champion part of `refresh` (its lock held)."""
        before = self.current.version if self.current else None
        try:
            info = self.registry.champion(self.view.name)
        except Exception as exc:  # MLflow unreachable: keep serving what we have
            self.registry_ok = False
            return self._failed("registry", f"cannot read the registry: {exc!r}", before)
        self.registry_ok = True
        self.last_check_at = utc_now()
        if info is None:
            return self._failed("registry", f"model '{self.view.name}' has no champion",
                                before)  # fmt: skip
        if before == info.version:
            self.refused_version = None  # the alias is back on what this worker serves
            return {"status": "unchanged", "version": before, "reason": reason}
        untrusted = untrusted_reason(info)
        if untrusted is not None:  # an alias moved around the gates: keep what we serve
            if self.refused_version == info.version:  # said once, not on every poll
                return {"status": "refused", "version": before, "champion": info.version,
                        "error": self.last_error, "reason": reason}  # fmt: skip
            self.refused_version = info.version
            return self._failed("untrusted", untrusted, before, info.version)
        self.refused_version = None
        if info.version == self.rejected_version and not force:
            return {"status": "rejected", "version": before, "champion": info.version,
                    "error": self.last_error, "reason": reason}  # fmt: skip
        try:
            candidate = self._load(info)
        except Exception as exc:  # a model that cannot load or answer must not serve
            self.rejected_version = info.version
            return self._failed("load", f"version {info.version}: {exc!r}", before,
                                info.version)  # fmt: skip
        self.current = candidate  # the swap: requests read this once
        self.swaps += 1
        self.rejected_version = None
        self.last_error = None
        log.info("serving %s version %s (was %s; %s)", self.view.name, info.version,
                 before, reason)  # fmt: skip
        self._event("swapped", info.version)
        return {"status": "swapped", "version": info.version, "previous_version": before,
                "reason": reason}  # fmt: skip

    def _load(self, info: VersionInfo) -> LoadedModel:
        start = time.perf_counter()
        predictor = Predictor.load(self.view, info.uri, info.version)
        records = sample_records(self.view) + list(self.recent.copy())  # copy: atomic
        problems = check_model(self.view, predictor, records, self.model_threads)
        if problems:
            raise ValueError("; ".join(problems))
        run_metrics: dict[str, float] = {}
        if info.run_id:
            with contextlib.suppress(Exception):  # lineage detail only, never blocks a swap
                run_metrics = dict(self.registry.client.get_run(info.run_id).data.metrics)
        log.info("loaded %s version %s in %.2fs, checked on %d records", self.view.name,
                 info.version, time.perf_counter() - start, len(records))  # fmt: skip
        return LoadedModel(predictor, info, utc_now(), run_metrics, self.model_threads)

    def _failed(
        self, kind: str, message: str, version: str | None, champion: str | None = None
    ) -> dict[str, Any]:
        message = redact(message)  # an MLflow error quotes its URI, password included
        self.last_error = message[:500]
        self.last_error_at = utc_now()
        log.warning("model refresh failed (%s): %s; still serving version %s", kind, message,
                    version)  # fmt: skip
        self._event(f"{kind}_error", champion or version or "none")
        return {"status": "error", "version": version, "champion": champion,
                "error": self.last_error}  # fmt: skip

    def _event(self, what: str, version: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(what, version)
            except Exception:  # metrics must never break a swap
                log.exception("model event hook failed")

    # ------------------------------------------------------------------ background

    def signal_siblings(self) -> None:
        """Tell the other workers of this service to check the registry now."""
        if self.signal_path is None:
            return
        self.signal_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.signal_path.with_name(f".{self.signal_path.name}.{os.getpid()}")
        tmp.write_text(f"{time.time_ns()}\n", encoding="utf-8")
        tmp.replace(self.signal_path)

    def _signal_stamp(self) -> int | None:
        if self.signal_path is None:
            return None
        try:
            return self.signal_path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def start(self) -> None:
        """Load the champion and keep polling, in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling the registry, so a worker shuts down without a thread left behind."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        stamp = self._signal_stamp()
        self.refresh("start")
        next_poll = time.monotonic() + (
            self.poll_seconds if self.current else min(self.poll_seconds, _INITIAL_RETRY_SECONDS)
        )
        while not self._stop.wait(0.5):
            seen = self._signal_stamp()
            now = time.monotonic()
            if seen != stamp:
                stamp = seen
                reason = "reload signal"
            elif now >= next_poll:
                reason = "poll" if self.current else "start (retry)"
            else:
                continue
            self.refresh(reason)
            wait = self.poll_seconds if self.current else _INITIAL_RETRY_SECONDS
            next_poll = time.monotonic() + min(self.poll_seconds, wait)

    # ------------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        """What `/metadata` shows of the model: which version serves, whether the registry
        answers, and the last error, so an operator sees a stale model without the logs."""
        cur = self.current
        out: dict[str, Any] = {
            "loaded": cur is not None,
            "registry_ok": self.registry_ok,
            "last_check_at": self.last_check_at.isoformat() if self.last_check_at else None,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "rejected_version": self.rejected_version,
            "refused_version": self.refused_version,
            "swaps": self.swaps,
            "poll_seconds": self.poll_seconds,
            "challenger": None,
        }
        trial = self.challenger
        if trial is not None:
            out["challenger"] = {"version": trial.version,
                                 "rollout": trial.info.tags.get("rollout", "shadow"),
                                 "loaded_at": trial.loaded_at.isoformat()}  # fmt: skip
        if cur is None:
            return out
        tags = cur.info.tags
        tag_metrics = cur.info.metrics
        out.update(
            model_name=cur.info.name,
            version=cur.version,
            run_id=cur.info.run_id,
            model_uri=cur.predictor.model_uri,
            loaded_at=cur.loaded_at.isoformat(),
            classes=cur.predictor.classes,
            training_window=tags.get("window"),
            as_of=tags.get("as_of"),
            trigger=tags.get("trigger"),
            train_rows=tags.get("train_rows"),
            validation_rows=tags.get("validation_rows"),
            data_fingerprint=tags.get("data_fingerprint"),
            git_commit=tags.get("git_commit"),
            promoted_at=tags.get("promoted_at"),
            metrics={"tags": tag_metrics, "run": cur.run_metrics},
        )
        return out
