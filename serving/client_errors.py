"""What a bad request may cost the service: a small, fast 4xx and one log line.

Issue 18 (item 3) sent a 3.97 MB `/predict` body with 340k unknown keys: BentoML answered a
48.5 MB 400 after 6.8 s (one error per key), logged a 25-line traceback quoting the input
for each such request (61 MB of log), and stalled a concurrent request for seconds. And
form or multipart bodies, which BentoML parses into the same model, could end in a 500
(item 8). The pieces here bound all of that, each where it is cheapest:

- `JsonBodiesOnly` (pure ASGI, before BentoML reads the body): a POST whose Content-Type is
  not JSON gets a 415 naming the type; a POST without one is read as JSON, as before.
- `too_many_unknown_fields`: a record with more than `MAX_ERRORS` unknown fields fails as
  one error naming the first few, instead of one error per field.
- `CappedClientErrors` (pure ASGI, on 4xx answers only): a 4xx body listing more than
  `MAX_ERRORS` errors is cut to the first ones, each message shortened, the total kept.
- `OneLineClientErrors` (a filter on BentoML's request-error logger): a 4xx is logged as
  one WARNING line (status, path, error count, first location and message) without a
  traceback or any input value; a 5xx keeps its traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ctloop.redact import redact
from serving.limits import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS = 20
"""Errors listed in a 4xx answer (and unknown fields named); the total is always given."""
MAX_MESSAGE = 200  # characters per listed error message
JSON_TYPES = ("application/json",)
BENTOML_REQUEST_LOGGER = "bentoml._internal.server.http_app"  # where log_exception logs


def too_many_unknown_fields(data: Any, known: Iterable[str]) -> str | None:
    """Why a record is refused as a whole (more than MAX_ERRORS unknown fields), else None:
    a few typos still get pydantic's error per field."""
    if not isinstance(data, Mapping) or len(data) <= MAX_ERRORS:
        return None
    known_set = set(known)
    unknown = [str(k) for k in data if k not in known_set]
    if len(unknown) <= MAX_ERRORS:
        return None
    names = ", ".join(repr(n[:40]) for n in unknown[:MAX_ERRORS])
    return f"{len(unknown)} unknown fields (the first {MAX_ERRORS}: {names})"


class JsonBodiesOnly:
    """Answer 415 to a POST whose body is declared as anything but JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass everything but a POST with a non-JSON Content-Type."""
        if scope["type"] == "http" and scope.get("method") == "POST":
            for name, value in scope["headers"]:
                if name == b"content-type":
                    media = value.split(b";", 1)[0].strip().lower().decode("latin-1")
                    if media not in JSON_TYPES and not media.endswith("+json"):
                        await _answer(send, 415, {
                            "error": f"unsupported body type '{media[:100]}': send the "
                                     "request as JSON (Content-Type: application/json)",
                            "detail": [{"type": "unsupported_media_type", "loc": ["body"]}],
                        })  # fmt: skip
                        return
                    break
        await self.app(scope, receive, send)


class CappedClientErrors:
    """Cut a 4xx answer's error list to MAX_ERRORS entries (the total stays in `error` and
    `error_count`). Only 4xx answers are looked at; everything else streams through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold a 4xx answer's start until its body is complete, then send it capped."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                body = _capped(b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


def _capped(body: bytes) -> bytes:
    """The body with at most MAX_ERRORS `detail` entries, each message shortened."""
    if len(body) < 4096:
        return body  # small already: the common case costs nothing
    try:
        data = json.loads(body)
    except ValueError:
        return body[:4096]
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, list):
        return body[:4096]
    data["error_count"] = len(detail)
    data["detail"] = [_short(e) for e in detail[:MAX_ERRORS]]
    if len(detail) > MAX_ERRORS:
        data["detail_truncated"] = f"the first {MAX_ERRORS} of {len(detail)} errors"
    return json.dumps(data).encode()


def _short(error: Any) -> Any:
    if not isinstance(error, dict):
        return str(error)[:MAX_MESSAGE]
    out = {k: v for k, v in error.items() if k in ("type", "loc", "msg")}
    out["loc"] = list(out.get("loc", []))[:5]
    if isinstance(out.get("msg"), str):
        out["msg"] = out["msg"][:MAX_MESSAGE]
    return out


class OneLineClientErrors(logging.Filter):
    """Turn BentoML's `Exception on <path>` ERROR with a traceback into one WARNING line
    when the exception is the client's fault (a validation error, a 4xx BentoML error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; rewrites it when it reports a client error."""
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        summary = _client_error(exc)
        if summary is None:
            return True  # a server error: the traceback is what the operator needs
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "%s on %s: %s", (summary[0], path, redact(summary[1]))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _client_error(exc: BaseException) -> tuple[int, str] | None:
    """(status, one-line summary without input values) of a client error, else None."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_context=False, include_url=False)
        first = errors[0] if errors else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))[:100]
        msg = str(first.get("msg", ""))[:MAX_MESSAGE]
        return 400, f"{len(errors)} validation error(s), first: {loc or 'body'}: {msg}"
    if isinstance(exc, BentoMLException) and 400 <= exc.error_code.value < 500:
        return exc.error_code.value, f"{type(exc).__name__}: {str(exc)[:MAX_MESSAGE]}"
    return None


async def _answer(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
