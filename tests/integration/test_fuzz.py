"""Bad input against the running service: schema-driven fuzzing, SQL injection, huge bodies.

A real `bentoml serve` (two workers, a real CatBoost champion, the prediction log in
MariaDB) is fuzzed from its own OpenAPI document (`/docs.json`) with schemathesis: valid
and invalid bodies for `/predict`, `/predict_batch` and `/admin/reload` (with the token, so
the reload path itself is exercised). No answer may be a 5xx, every 4xx must name the
problem (a field, or the document as a whole: invalid JSON, not an object, too large),
and every 200 must be in `prediction_log` with the strings it carried stored verbatim.

The explicit tests send SQL-injection strings in every field the view accepts as free
text, and bodies far past the service's size limit, which must be refused before they
are read (`serving/limits.py`) while the service stays healthy.

Bounded: a few dozen generated cases per endpoint, local traffic only.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from serving.config import ServingConfig

from ctloop.features.view import FeatureView, load_view_file
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_database
from tests.support.paths import ROOT
from tests.support.serving import Server, client, records, register_version, service_env

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "test-admin-token-" + uuid.uuid4().hex
MAX_BATCH = 100
FLUSH_SECONDS = 0.1  # the fuzz test waits for each answered row: keep the wait short
# pydantic error types that concern the document as a whole, so their `loc` is empty
WHOLE_BODY_ERRORS = {"json_invalid", "json_type", "model_type", "model_attributes_type"}
SQL_INJECTIONS = [
    "'; DROP TABLE prediction_log; --",
    "1' OR '1'='1",
    '" OR ""="',
    "Robert'); DROP TABLE credit_score_features;--",
    "' UNION SELECT request_id FROM prediction_log --",
    "\\'; DELETE FROM prediction_log; -- ",
    "%' OR 1=1 #",
    "1; SELECT SLEEP(5)",
    "\x00'; DROP TABLE prediction_log; --",
    "' OR 1=1; /* 🙂 */",
]


# ---------------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    view = load_view_file(ROOT / "features" / "credit_score.yaml")
    tmp = tmp_path_factory.mktemp("fuzz")
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    registry = Registry(tracking, tmp / "mlartifacts")
    registry.promote(view.name, register_version(view, registry, seed=5))
    with mariadb_database("ctloop_fuzz") as url:
        store = FeatureStore(url)
        store.init([view])
        env = service_env(
            tmp, tracking, url, TOKEN, LOG_FLUSH_SECONDS=str(FLUSH_SECONDS),
            MAX_BATCH=str(MAX_BATCH),
        )  # fmt: skip
        server = Server(env, tmp / "serve.log")
        try:
            server.wait_every_worker(2)
            yield {"view": view, "store": store, "server": server, "url": server.url}
        finally:
            server.stop()
            store.dispose()


@pytest.fixture(scope="module")
def api_schema(service: dict[str, Any]) -> schemathesis.BaseSchema:
    """The service's own OpenAPI document, as it serves it."""
    return schemathesis.openapi.from_url(f"{service['url']}/docs.json")


def logged_row(
    store: FeatureStore, view_name: str, request_id: str, timeout: float = 10
) -> dict[str, Any]:
    """The prediction log row of one answer (features one key each, as the monitor reads
    it), once the writer has flushed it."""
    log = PredictionLog(store)
    deadline = time.monotonic() + timeout
    while True:
        rows = log.read_requests(view_name, [request_id])
        if len(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(rows) == 1, f"answer {request_id} has {len(rows)} prediction log rows"
    return rows.iloc[0].to_dict()


def check_stored_verbatim(
    store: FeatureStore, view: FeatureView, sent: dict[str, Any], request_id: str
) -> None:
    """The row holds the entity and every feature exactly as the client sent them."""
    row = logged_row(store, view.name, request_id)
    entity = sent.get(view.entity)
    assert row["entity_id"] == (None if entity is None else str(entity))
    for name in view.feature_names:
        got, want = row[name], sent.get(name)
        if want is None:
            assert got is None or pd.isna(got), (name, got)
        else:
            assert got == want, (name, got, want)


def problems_named(body: bytes) -> list[str]:
    """What a 4xx body names: each error's location, or its type for whole-body errors.

    An empty list, or an error that names nothing, means the client cannot tell what to fix.
    """
    payload = json.loads(body)
    details = payload.get("detail") if isinstance(payload, dict) else None
    if not isinstance(details, list) or not details:
        # BentoML's own refusals and ours outside validation: a message naming the problem
        message = payload.get("error") if isinstance(payload, dict) else None
        return [message] if isinstance(message, str) and message else []
    named = []
    for item in details:
        loc = [str(part) for part in item.get("loc") or []]
        if loc:
            named.append(".".join(loc))
        elif item.get("type") in WHOLE_BODY_ERRORS:
            named.append(item["type"])
        else:
            return []  # one error that names nothing is one too many
    return named


# ---------------------------------------------------------------------- fuzzing


def fuzz(
    schema: schemathesis.BaseSchema,
    path: str,
    mode: GenerationMode,
    check: Callable,
    max_examples: int = 100,
) -> int:
    """Run `check` on cases generated from the schema for POST `path`; how many ran.

    Hypothesis drives schemathesis's strategy directly rather than through
    `schemathesis.pytest.from_fixture`, whose lazy loader sets `Function._nodeid`, an
    attribute pytest 9 no longer has (schemathesis 4.32 + pytest 9.2 fail on it).
    """
    ran = 0

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,  # no .hypothesis folder in the checkout
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema[path]["POST"].as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal ran
        ran += 1
        check(case)

    run()
    return ran


def answer_check(service: dict[str, Any], path: str, seen: list[tuple[int, str]]) -> Callable:
    """The per-case check of the predict endpoints: never a 5xx; a 4xx names the problem;
    a 200 answers every record and each is in prediction_log exactly as sent."""
    view, store = service["view"], service["store"]

    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=service["url"], timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        status = response.status_code
        body = response.request.body
        seen.append((status, "" if status == 200 else f"{(body or b'')[:300]!r} -> "
                     f"{response.text[:300]}"))  # fmt: skip
        assert status == 200 or 400 <= status < 500, status
        if status != 200:
            assert problems_named(response.content), f"{status} names nothing: {response.text}"
            return
        sent = json.loads(response.request.body)
        answer = response.json()
        if path == "/predict":
            check_stored_verbatim(store, view, sent, answer["request_id"])
            return
        assert len(answer["predictions"]) == len(sent["records"])
        for record, prediction in zip(sent["records"], answer["predictions"], strict=True):
            check_stored_verbatim(store, view, record, prediction["request_id"])

    return check


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("path", ["/predict", "/predict_batch"])
def test_fuzz_predict_endpoints(
    service: dict[str, Any], api_schema: schemathesis.BaseSchema, path: str, mode: GenerationMode
) -> None:
    """The document as served. It lacks the view's whole-number rule (no `multipleOf`), so
    most "valid" cases carry a fractional count and are refused, naming the field."""
    seen: list[tuple[int, str]] = []
    assert fuzz(api_schema, path, mode, answer_check(service, path, seen)) >= 10
    statuses = Counter(status for status, _ in seen)
    if mode is GenerationMode.POSITIVE:
        assert statuses[200] > 0, statuses  # valid data does get answers
    else:
        assert sum(n for s, n in statuses.items() if s >= 400) > 0, statuses


def as_the_view_states(node: Any, integers: set[str]) -> Any:
    """The OpenAPI document with what BentoML's rendering of it leaves out: `multipleOf: 1`
    on the view's integer features, and request bodies marked required."""
    if isinstance(node, list):
        return [as_the_view_states(item, integers) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_the_view_states(value, integers) for key, value in node.items()}
    if isinstance(out.get("requestBody"), dict):
        out["requestBody"]["required"] = True
    for name, prop in (out.get("properties") or {}).items():
        if name in integers:
            for branch in prop.get("anyOf", [prop]):
                if branch.get("type") == "number":
                    branch["multipleOf"] = 1
    return out


@pytest.mark.parametrize("path", ["/predict", "/predict_batch"])
def test_every_record_the_view_allows_is_answered(service: dict[str, Any], path: str) -> None:
    """Positive fuzzing against the full contract (the served document plus what it leaves
    out, see `as_the_view_states`): every generated request must be answered, and logged
    verbatim."""
    view = service["view"]
    integers = {f.name for f in view.features if f.integer}
    document = httpx.get(f"{service['url']}/docs.json", timeout=30).json()
    exact = schemathesis.openapi.from_dict(as_the_view_states(document, integers))
    seen: list[tuple[int, str]] = []
    check = answer_check(service, path, seen)  # waits for each answer's row: fewer cases
    ran = fuzz(exact, path, GenerationMode.POSITIVE, check, max_examples=50)
    refused = [note for status, note in seen if status != 200]
    assert ran >= 10 and not refused, refused


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_fuzz_admin_reload_with_the_token(
    service: dict[str, Any], api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=service["url"], headers=auth, timeout=60)
        case.validate_response(response, checks=[not_a_server_error])
        if 400 <= response.status_code < 500:
            assert problems_named(response.content), response.text
        else:
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "unchanged"

    assert fuzz(api_schema, "/admin/reload", mode, check) >= 5


# ---------------------------------------------------------------------- SQL injection


def free_text_fields(view: FeatureView) -> list[str]:
    """Fields the schema accepts any string in: the entity and categories open to new values."""
    return [view.entity] + [f.name for f in view.categorical_features if f.allow_unseen]


def table_names(store: FeatureStore) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def test_sql_injection_strings_are_answered_and_stored_verbatim(service: dict[str, Any]) -> None:
    view, store, url = service["view"], service["store"], service["url"]
    tables = table_names(store)
    assert {"prediction_log", f"{view.name}_features", f"{view.name}_labels",
            view.log_table} <= tables  # fmt: skip
    good = records(view, 1, seed=21)[0]
    fields = free_text_fields(view)
    assert view.entity in fields and len(fields) >= 2  # customer_id and occupation
    answered: list[tuple[dict[str, Any], str]] = []
    with client() as http:
        for field in fields:
            for text in SQL_INJECTIONS:
                sent = {**good, field: text}
                response = http.post(f"{url}/predict", json=sent)
                assert response.status_code == 200, (field, text, response.text)
                answered.append((sent, response.json()["request_id"]))
        batch = [{**good, field: text} for field in fields for text in SQL_INJECTIONS]
        response = http.post(f"{url}/predict_batch", json={"records": batch})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        answered += [(s, p["request_id"]) for s, p in zip(batch, predictions, strict=True)]
    for sent, request_id in answered:
        check_stored_verbatim(store, view, sent, request_id)
    assert table_names(store) == tables
    ids = PredictionLog(store).request_ids()
    assert {rid for _, rid in answered} <= set(ids) and len(ids) == len(set(ids))


def test_sql_injection_in_closed_fields_is_refused_naming_the_field(
    service: dict[str, Any],
) -> None:
    view, url = service["view"], service["url"]
    good = records(view, 1, seed=22)[0]
    closed = [f.name for f in view.categorical_features if not f.allow_unseen]
    numeric = [f.name for f in view.features if f.is_numeric]
    with client() as http:
        for field in [*closed, numeric[0], view.event_date]:
            for text in SQL_INJECTIONS[:3]:
                response = http.post(f"{url}/predict", json={**good, field: text})
                assert response.status_code == 400, (field, text, response.text)
                assert problems_named(response.content) == [field], response.text


# ---------------------------------------------------------------------- oversized input


def metric_total(metrics: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(prefix))  # fmt: skip


def healthy(service: dict[str, Any]) -> None:
    """Ready, still answering a normal request, and nothing lost from the log."""
    url = service["url"]
    with client() as http:
        assert http.get(f"{url}/readyz").status_code == 200
        response = http.post(f"{url}/predict", json=records(service["view"], 1, seed=23)[0])
        assert response.status_code == 200, response.text
        metrics = http.get(f"{url}/metrics").text
    assert metric_total(metrics, 'ctloop_prediction_log_rows_total{outcome="failed"}') == 0
    assert metric_total(metrics, 'ctloop_prediction_log_rows_total{outcome="written"}') > 0


def test_a_20mb_body_is_refused_before_it_is_read(service: dict[str, Any]) -> None:
    url = service["url"]
    big = {"records": [{"customer_id": "x" * 64, "padding": "y" * 1000}] * 20_000}
    body = json.dumps(big).encode()
    assert len(body) > 20 * 1024 * 1024
    with client() as http:
        for path in ("/predict", "/predict_batch", "/admin/reload"):
            started = time.monotonic()
            response = http.post(
                f"{url}{path}", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 413, (path, response.status_code, response.text[:300])
            assert time.monotonic() - started < 5
            assert "CTLOOP_SERVING_MAX_BODY_BYTES" in response.json()["error"]
            assert problems_named(response.content) == ["body"]
    healthy(service)


def test_the_refusal_comes_before_the_body_is_sent(service: dict[str, Any]) -> None:
    """Only the headers go out: the 413 arrives although not one body byte was sent."""
    port = int(service["url"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 20971520\r\n\r\n"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    healthy(service)


def test_a_huge_chunked_body_is_cut_off(service: dict[str, Any]) -> None:
    """No Content-Length to judge by: the limit applies as the chunks arrive."""

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 64 MiB if the server read it all
            yield b" " * (1024 * 1024)

    with client() as http:
        response = http.post(
            f"{service['url']}/predict",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413, response.text[:300]
    assert problems_named(response.content) == ["body"]
    healthy(service)


def test_oversized_batches_are_refused(service: dict[str, Any]) -> None:
    url, view = service["url"], service["view"]
    good = records(view, 1, seed=24)[0]
    limit = ServingConfig.model_fields["max_body_bytes"].default  # the test service's
    per_record = len(json.dumps(good)) + 2
    under_limit = int(0.8 * limit / per_record)  # parsed, then refused by its length
    assert under_limit > 10 * MAX_BATCH
    with client() as http:
        for n in (MAX_BATCH + 1, under_limit):
            started = time.monotonic()
            response = http.post(f"{url}/predict_batch", json={"records": [good] * n})
            assert response.status_code == 400, response.text[:300]
            assert problems_named(response.content) == ["records"], response.text[:300]
            assert f"at most {MAX_BATCH} items" in response.text
            assert time.monotonic() - started < 5
        over_limit = [good] * (2 * limit // per_record)
        response = http.post(f"{url}/predict_batch", json={"records": over_limit})
        assert response.status_code == 413, response.text[:300]  # refused before parsing
    healthy(service)
