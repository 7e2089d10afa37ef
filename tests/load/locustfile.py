"""Load test of the prediction service with realistic traffic, run by locust.

    uv run --frozen locust -f tests/load/locustfile.py --headless -u 4 -r 2 -t 30s \\
        --host http://127.0.0.1:3000 --stop-timeout 10 --answers-file data/load/answers.json

or `make load-test`, or without `--headless` for locust's web UI on http://127.0.0.1:8089.

Each simulated client draws its own pool of customers from `ctloop.ingest.synth`, the same seeded
world the models are trained on (optionally drifted: `--drift covariate_shift`), so the
service sees the feature view's real distributions, missing values and customer ids, not
one fixed payload. A client sends single records to `/predict`, batches to
`/predict_batch`, and a share of bad requests built from the view's contract (wrong type,
out of range, unknown category, missing or unknown field, malformed JSON, oversized
batch, one bad record in a batch) that must be refused with a 4xx naming the field.

Every answered record is counted here, by the load generator, together with its request
id; at the end of the run the tally goes to `--answers-file`, which
`python -m tests.load.report` compares with the rows that reached `prediction_log`.
Run it as its own process: locust monkey-patches the standard library with gevent, which
broke airflow/mlflow in the same process, so this file imports only the feature view and
the synthetic stream (numpy, pandas, pydantic) and refuses to run if anything heavier
came along.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, events, task
from locust.env import Environment

from ctloop.features.view import FeatureView, load_view
from ctloop.ingest.synth import Scenario, StreamConfig, check_view, generate_day

HEAVY = ("airflow", "mlflow", "bentoml", "catboost")
if _loaded := [name for name in HEAVY if name in sys.modules]:
    raise ImportError(f"the locustfile must not import {_loaded}: run locust as its own process")

log = logging.getLogger("ctloop.load")

DEFAULT_ANSWERS = "data/load/answers.json"
STOP_TIMEOUT = 10.0
INVALID_KINDS = (
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "missing_field",
    "unknown_field",
    "malformed_json",
    "oversized_batch",
    "bad_batch_record",
)


BadRequest = tuple[str, bytes, str]  # path, body, the name its refusal must cite
OPTIONS_RECORDED = (
    "batch_size", "batch_share", "invalid_share", "drift", "pool_size", "event_date", "seed",
    "think_time", "num_users", "spawn_rate", "run_time",
)  # fmt: skip


# ---------------------------------------------------------------------- options


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    """Knobs of the traffic mix; each also reads a LOCUST_* variable and shows in the web UI."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=20,
        env_var="LOCUST_BATCH_SIZE",
        help="records per /predict_batch request (default 20)",
    )
    parser.add_argument(
        "--batch-share",
        type=float,
        default=0.2,
        env_var="LOCUST_BATCH_SHARE",
        help="share of valid requests sent to /predict_batch (default 0.2)",
    )
    parser.add_argument(
        "--invalid-share",
        type=float,
        default=0.05,
        env_var="LOCUST_INVALID_SHARE",
        help="share of requests that are invalid and must get a 4xx (0.05)",
    )
    parser.add_argument(
        "--drift",
        choices=[s.value for s in Scenario],
        default="none",
        env_var="LOCUST_DRIFT",
        help="draw the traffic from a drifted world: covariate_shift moves "
        "the features, concept_drift only the (unseen) labels",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=400,
        env_var="LOCUST_POOL_SIZE",
        help="distinct customers generated per simulated client (400)",
    )
    parser.add_argument(
        "--event-date",
        default="",
        env_var="LOCUST_EVENT_DATE",
        help="event_date sent with every record, ISO (default: today, UTC)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        env_var="LOCUST_SEED",
        help="seed of the synthetic world (default 7)",
    )
    parser.add_argument(
        "--think-time",
        type=float,
        default=0.1,
        env_var="LOCUST_THINK_TIME",
        help="each client waits uniformly 0..this many seconds between requests (0.1)",
    )
    parser.add_argument(
        "--answers-file",
        default=DEFAULT_ANSWERS,
        env_var="LOCUST_ANSWERS_FILE",
        help=f"where the answered-records tally goes at test stop ({DEFAULT_ANSWERS})",
    )


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    """Let clients finish their request when the run ends, unless told otherwise; keep
    `--run-time` whole.

    Killed mid-request, a client never sees an answer the service did log, and the
    answered-vs-logged comparison would be off by the requests in flight.
    """
    if not environment.stop_timeout:
        environment.stop_timeout = STOP_TIMEOUT
    # gevent's loop caches "now"; importing pandas after locust's monkey-patching takes
    # seconds, which `--run-time` (a timer started from that stale "now") would eat.
    gevent.get_hub().loop.update_now()


# ---------------------------------------------------------------------- the tally


class Tally:
    """What this load generator saw answered, in the process that sent it."""

    def __init__(self) -> None:
        self.started_at = dt.datetime.now(dt.UTC)
        self.records = 0  # answered records: one prediction_log row each
        self.requests: Counter[str] = Counter()  # answered requests per name
        self.request_ids: list[str] = []
        self.invalid: dict[str, Counter[str]] = defaultdict(Counter)  # kind -> outcome
        self.in_flight = 0
        self.view: str | None = None

    def answered(self, name: str, ids: list[str]) -> None:
        self.records += len(ids)
        self.requests[name] += 1
        self.request_ids.extend(ids)

    def write(self, path: Path, environment: Environment) -> None:
        options = environment.parsed_options
        summary = {
            "host": environment.host,
            "view": self.view,
            "started_at": self.started_at.isoformat(),
            "stopped_at": dt.datetime.now(dt.UTC).isoformat(),
            "answered_records": self.records,
            "answered_requests": dict(self.requests),
            "invalid": {kind: dict(outcomes) for kind, outcomes in self.invalid.items()},
            "in_flight_at_stop": self.in_flight,
            # locust's own counts, final here (every client has stopped); its stats CSV is
            # rewritten once a second and not at exit, so it can miss the last second
            "locust_stats": {
                name: {"requests": entry.num_requests, "failures": entry.num_failures}
                for (name, _method), entry in environment.stats.entries.items()
            },
            "options": {key: getattr(options, key, None) for key in OPTIONS_RECORDED},
            "request_ids": self.request_ids,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary))
        tmp.replace(path)


TALLY = Tally()
_user_numbers = itertools.count()


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global TALLY
    TALLY = Tally()


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    """Fires after every client stopped: the tally is final."""
    options = environment.parsed_options
    path = Path(getattr(options, "answers_file", "") or DEFAULT_ANSWERS)
    TALLY.write(path, environment)
    log.info("answered %d records in %s; tally written to %s",
             TALLY.records, dict(TALLY.requests), path)  # fmt: skip


# ---------------------------------------------------------------------- traffic


def json_records(view: FeatureView, frame: Any, event_date: dt.date) -> list[dict[str, Any]]:
    """Synthetic rows as request bodies: JSON types, missing values as null, ISO date."""
    columns = [view.entity, *view.feature_names]
    out = []
    for row in frame[columns].itertuples(index=False, name=None):
        record: dict[str, Any] = {}
        for key, value in zip(columns, row, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                record[key] = None
            elif hasattr(value, "item"):  # numpy scalar
                record[key] = value.item()
            else:
                record[key] = value
        record[view.event_date] = event_date.isoformat()
        out.append(record)
    return out


def customer_pool(
    view: FeatureView, size: int, seed: int, drift: str, event_date: dt.date
) -> list[dict[str, Any]]:
    """`size` customers of one simulated client, from the seeded synthetic world."""
    scenario = Scenario(drift)
    config = StreamConfig(
        seed=seed,
        rows_per_day=size,
        scenario=scenario,
        drift_start=event_date if scenario is not Scenario.NONE else None,
    )
    features, _labels = generate_day(event_date, config)
    return json_records(view, features, event_date)


class Invalid:
    """Bad requests derived from the view's contract, each with the name the 4xx must cite."""

    def __init__(self, view: FeatureView, max_batch: int) -> None:
        self.view = view
        self.max_batch = max_batch
        self.numeric = [f for f in view.features if f.is_numeric]
        self.bounded = [f for f in self.numeric if f.max is not None or f.min is not None]
        self.closed = [f for f in view.categorical_features if not f.allow_unseen]
        self.required = [f for f in view.features if not f.nullable]

    def build(self, kind: str, good: dict[str, Any], pool: list[dict[str, Any]]) -> BadRequest:
        """(path, body, name the refusal must cite) for one bad request of this kind."""
        rec = dict(good)
        path, expect = "/predict", ""
        if kind == "wrong_type":
            feature = random.choice(self.numeric)
            rec[feature.name], expect = "not-a-number", feature.name
        elif kind == "out_of_range":
            feature = random.choice(self.bounded)
            if feature.max is not None:
                rec[feature.name] = feature.max + max(1.0, abs(feature.max))
            else:
                rec[feature.name] = feature.min - max(1.0, abs(feature.min))
            expect = feature.name
        elif kind == "unknown_category":
            feature = random.choice(self.closed)
            rec[feature.name], expect = f"Unknown_{random.randrange(10**6)}", feature.name
        elif kind == "missing_field":
            feature = random.choice(self.required)
            del rec[feature.name]
            expect = feature.name
        elif kind == "unknown_field":
            rec["ssn"], expect = "078-05-1120", "ssn"
        elif kind == "malformed_json":
            text = json.dumps(rec)
            return path, text[: random.randrange(1, len(text) - 1)].encode(), "json"
        elif kind == "oversized_batch":
            records = [pool[i % len(pool)] for i in range(self.max_batch + 1)]
            return "/predict_batch", json.dumps({"records": records}).encode(), "records"
        elif kind == "bad_batch_record":
            feature = random.choice(self.numeric)
            records = [dict(r) for r in random.sample(pool, min(5, len(pool)))]
            records[-1][feature.name] = "not-a-number"
            return "/predict_batch", json.dumps({"records": records}).encode(), feature.name
        else:
            raise ValueError(f"unknown invalid kind {kind!r}")
        return path, json.dumps(rec).encode(), expect


def names_the_problem(body: str, expect: str) -> bool:
    """Whether a refusal names `expect`: in a pydantic error's `loc`, or `json` as its type."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    details = payload.get("detail") if isinstance(payload, dict) else None
    if not isinstance(details, list):
        return False
    for item in details:
        if not isinstance(item, dict):
            continue
        loc = [str(part) for part in item.get("loc") or []]
        if expect in loc or (expect == "json" and item.get("type") == "json_invalid"):
            return True
    return False


class ServiceClient(FastHttpUser):
    """One client of the service: its own customers, a mix of single, batch and bad calls."""

    def wait_time(self) -> float:
        return random.uniform(0, float(self.environment.parsed_options.think_time))

    def on_start(self) -> None:
        """Learn the served view and batch limit, then draw this client's customers."""
        options = self.environment.parsed_options
        with self.client.get("/metadata", name="metadata", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"GET /metadata answered {response.status_code}")
                raise RuntimeError(f"GET /metadata answered {response.status_code}")
            meta = response.json()
        self.view = load_view(meta["view"])
        TALLY.view = self.view.name
        check_view(self.view)  # the synthetic world simulates this view's columns
        self.max_batch = int(meta["limits"]["max_batch"])
        self.batch_size = min(int(options.batch_size), self.max_batch)
        day = (
            dt.date.fromisoformat(options.event_date)
            if options.event_date
            else dt.datetime.now(dt.UTC).date()
        )
        number = next(_user_numbers)
        self.pool = customer_pool(
            self.view, int(options.pool_size), int(options.seed) * 1000 + number,
            str(options.drift), day,
        )  # fmt: skip
        self.invalid = Invalid(self.view, self.max_batch)

    @task
    def traffic(self) -> None:
        """One request: invalid with --invalid-share, else a batch with --batch-share."""
        options = self.environment.parsed_options
        if random.random() < float(options.invalid_share):
            self.send_invalid(random.choice(INVALID_KINDS))
        elif random.random() < float(options.batch_share):
            self.predict_batch()
        else:
            self.predict()

    def _valid(self, path: str, name: str, body: dict[str, Any], ids: Callable) -> None:
        TALLY.in_flight += 1
        try:
            with self.client.post(path, json=body, name=name, catch_response=True) as response:
                if response.status_code != 200:
                    response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                    return
                try:
                    answered = ids(response.json())
                except (ValueError, KeyError, TypeError) as exc:
                    response.failure(f"unexpected answer ({exc!r}): {response.text[:200]}")
                    return
                TALLY.answered(name, answered)
                response.success()
        finally:
            TALLY.in_flight -= 1

    def predict(self) -> None:
        record = random.choice(self.pool)
        self._valid("/predict", "predict", record, lambda answer: [answer["request_id"]])

    def predict_batch(self) -> None:
        records = random.sample(self.pool, min(self.batch_size, len(self.pool)))

        def ids(answer: dict[str, Any]) -> list[str]:
            out = [p["request_id"] for p in answer["predictions"]]
            if len(out) != len(records):
                raise ValueError(f"{len(out)} predictions for {len(records)} records")
            return out

        self._valid("/predict_batch", "predict_batch", {"records": records}, ids)

    def send_invalid(self, kind: str) -> None:
        """A bad request: success only when refused with a 4xx that names the problem."""
        path, body, expect = self.invalid.build(kind, random.choice(self.pool), self.pool)
        headers = {"Content-Type": "application/json"}
        with self.client.post(
            path, data=body, headers=headers, name=f"invalid: {kind}", catch_response=True
        ) as response:
            status = response.status_code
            text = response.text or ""
            if 400 <= status < 500 and names_the_problem(text, expect):
                TALLY.invalid[kind]["refused"] += 1
                response.success()
                return
            if 200 <= status < 300:
                TALLY.invalid[kind]["accepted"] += 1
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    # the service answered, so it logged: the comparison must count it
                    answer = response.json()
                    rows = answer.get("predictions", [answer])
                    TALLY.answered(f"accepted {kind}", [r["request_id"] for r in rows])
            else:
                TALLY.invalid[kind]["wrong"] += 1
            response.failure(f"{kind}: expected a 4xx naming '{expect}', got {status}: "
                             f"{text[:200]}")  # fmt: skip
