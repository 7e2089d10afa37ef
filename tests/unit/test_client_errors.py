"""Serving's client-error bounds and the admin-token check, driven in-process (the same
on the running service: `tests/integration/test_hardening_serving.py`)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from serving.client_errors import (
    MAX_ERRORS,
    CappedClientErrors,
    JsonBodiesOnly,
    OneLineClientErrors,
    too_many_unknown_fields,
)
from serving.config import admin_token_problem

from tests.unit.test_body_limit import echo, run_asgi


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (b"application/json", 200),
        (b"application/json; charset=utf-8", 200),
        (b"application/problem+json", 200),
        (b"application/x-www-form-urlencoded", 415),
        (b"multipart/form-data; boundary=x", 415),
        (b"text/plain", 415),
    ],
)
def test_only_json_bodies_reach_the_app(content_type: bytes, status: int) -> None:
    answer = run_asgi(JsonBodiesOnly(echo), [(b"content-type", content_type)], [b"{}"])
    assert answer["status"] == status
    if status == 415:
        assert b"application/json" in answer["body"]


def test_a_body_without_content_type_is_read_as_json() -> None:
    assert run_asgi(JsonBodiesOnly(echo), [], [b"{}"])["status"] == 200


def four_hundred(detail: list[dict[str, Any]]) -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        body = json.dumps({"error": f"{len(detail)} validation errors", "detail": detail})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body.encode()})

    return app


def test_a_4xx_lists_at_most_max_errors_each_short() -> None:
    detail = [{"type": "missing", "loc": ["records", i, "age"], "msg": "x" * 1000,
               "input": "secret"} for i in range(5000)]  # fmt: skip
    answer = run_asgi(CappedClientErrors(four_hundred(detail)), [], [b""])
    body = json.loads(answer["body"])
    assert answer["status"] == 400 and len(answer["body"]) < 10_000
    assert len(body["detail"]) == MAX_ERRORS and body["error_count"] == 5000
    assert all(len(e["msg"]) <= 200 and "input" not in e for e in body["detail"])


def test_a_small_4xx_and_any_2xx_pass_unchanged() -> None:
    small = [{"type": "missing", "loc": ["age"], "msg": "Field required"}]
    answer = run_asgi(CappedClientErrors(four_hundred(small)), [], [b""])
    assert json.loads(answer["body"])["detail"] == small
    assert run_asgi(CappedClientErrors(echo), [], [b"{}"])["status"] == 200


def test_hundreds_of_unknown_fields_are_one_error() -> None:
    data = {f"k{i}": 1 for i in range(1000)}
    problem = too_many_unknown_fields(data, ["age"])
    assert problem is not None and problem.startswith("1000 unknown fields")
    assert too_many_unknown_fields({"agex": 1, "age": 2}, ["age"]) is None  # a typo: per field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    age: int


def test_a_client_error_is_one_warning_line_without_values() -> None:
    try:
        Strict.model_validate({"age": "VALUE-MARKER", "x": 1})
    except ValidationError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                               ("/predict", "POST"), exc_info)  # fmt: skip
    assert OneLineClientErrors().filter(record)
    text = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert text.startswith("WARNING 400 on /predict: 2 validation error(s)")
    assert "\n" not in text and "VALUE-MARKER" not in text


def test_a_server_error_keeps_its_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]",
                               ("/predict", "POST"), exc_info)  # fmt: skip
    OneLineClientErrors().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None


@pytest.mark.parametrize(
    "token",
    ["change-me-to-a-long-random-string", "CHANGEME-please-0123456789", "short", "a" * 40],
)
def test_placeholder_admin_tokens_are_refused(token: str) -> None:
    assert admin_token_problem(token) is not None


def test_a_long_random_admin_token_and_none_are_fine() -> None:
    assert admin_token_problem("test-admin-token-0f3c9a7d2b8e4c1f9a6d") is None
    assert admin_token_problem(None) is None
