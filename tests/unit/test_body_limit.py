"""Serving's request-body limit as an ASGI middleware, driven in-process: a body over the
limit is refused before it is read, chunked or not, and one under it reaches the app
intact. The same limit on the running service is fuzzed in
`tests/integration/test_fuzz.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.limits import BodySizeLimit


def run_asgi(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> dict:
    """Drive an ASGI app with one request; return the status and what the app read."""
    inbox = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "body": body, "unread": len(inbox)}


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """An app that reads the whole body and answers with its size."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def test_body_limit_middleware() -> None:
    limited = BodySizeLimit(echo, max_bytes=1000)
    length = [(b"content-length", b"1001")]
    refused = run_asgi(limited, length, [b"x" * 1001])
    assert refused["status"] == 413 and refused["unread"] == 1  # never read
    assert run_asgi(limited, [(b"content-length", b"1000")], [b"x" * 1000])["body"] == b"1000"
    chunked = [(b"transfer-encoding", b"chunked")]
    cut = run_asgi(limited, chunked, [b"x" * 600, b"x" * 600, b"x" * 600])
    assert cut["status"] == 413 and cut["unread"] == 1  # stopped at the chunk over the limit
    whole = run_asgi(limited, chunked, [b"x" * 400, b"x" * 400, b"x" * 200])
    assert whole["status"] == 200 and whole["body"] == b"1000"  # replayed to the app intact
    assert run_asgi(limited, [], [b""])["body"] == b"0"
