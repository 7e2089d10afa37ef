"""The demo's traffic: a day's customers sent to the prediction service over HTTP, and
the waits that make the next step see what that traffic did (rows logged, a model
swapped in), so every count the demo checks is final when it is read.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import httpx
import pandas as pd

from ctloop.errors import CtloopError
from ctloop.predlog.store import CHAMPION_ROLE, PredictionLog


def request_bodies(view: Any, features: pd.DataFrame) -> list[dict[str, Any]]:
    """A day's customers as request bodies: entity, event date and features, nulls as null."""
    frame = features[[view.entity, view.event_date, *view.feature_names]].copy()
    frame[view.event_date] = pd.to_datetime(frame[view.event_date]).dt.strftime("%Y-%m-%d")
    return json.loads(frame.to_json(orient="records"))


def send_day(url: str, bodies: list[dict[str, Any]], batch: int = 100) -> list[dict[str, Any]]:
    """Send a day's records: the first few one by one, the rest in batches. Raises on any
    non-200 answer (the demo's traffic is valid; a refusal would be a bug)."""
    answers: list[dict[str, Any]] = []
    with httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        singles = bodies[:20]
        for body in singles:
            r = http.post(f"{url}/predict", json=body)
            if r.status_code != 200:
                raise CtloopError(f"/predict answered {r.status_code}: {r.text[:300]}")
            answers.append(r.json())
        rest = bodies[len(singles) :]
        for i in range(0, len(rest), batch):
            r = http.post(f"{url}/predict_batch", json={"records": rest[i : i + batch]})
            if r.status_code != 200:
                raise CtloopError(f"/predict_batch answered {r.status_code}: {r.text[:300]}")
            body = r.json()
            answers += [{**p, "model_version": body["model_version"]} for p in body["predictions"]]
    return answers


def wait_logged(store: Any, view: str, expected: int, timeout: float = 60) -> int:
    """Wait until the prediction log holds `expected` rows of answers given to callers
    (the writer flushes every 0.5 s; a shadow's rows are not answers)."""
    deadline = time.monotonic() + timeout
    predictions = PredictionLog(store)
    count = predictions.count(view, role=CHAMPION_ROLE)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = predictions.count(view, role=CHAMPION_ROLE)
    return count


def wait_served(url: str, version: str, timeout: float = 60) -> bool:
    """Wait until 10 answers in a row (spread over the workers) come from `version`."""
    deadline, streak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and streak < 10:
        with contextlib.suppress(httpx.HTTPError):
            meta = httpx.get(f"{url}/metadata", timeout=5).json()
            streak = streak + 1 if meta.get("version") == version else 0
        time.sleep(0.1)
    return streak >= 10
