"""A request body size limit for the service, enforced before the body is read.

BentoML 1.4 has no body size limit (its `api_server.max_request_size` was removed): an API
reads the whole body into memory and parses it before validation runs, so a 20 MB JSON
document costs a worker seconds of CPU and its memory before the request is refused. This
pure ASGI middleware answers `413` from the `Content-Length` header alone, before a byte of
the body is read; a chunked body (no length announced) is counted as it arrives and
refused as soon as it passes the limit. It is pure ASGI, not Starlette's
`BaseHTTPMiddleware`, so it adds microseconds per request, not a task and a stream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SETTING = "CTLOOP_SERVING_MAX_BODY_BYTES"


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with `413`, without reading them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an oversized body before the app parses it: by its `Content-Length` at
        once, or, for a chunked body, as soon as the bytes received pass the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            # the HTTP server has already refused a malformed or contradictory length
            size = int(length) if length.isdigit() else 0
            if size > self.max_bytes:
                await self._refuse(send, f"{size} bytes")
                return
            await self.app(scope, receive, send)
        elif chunked:
            await self._chunked(scope, receive, send)
        else:  # no body
            await self.app(scope, receive, send)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer a body of unknown length up to the limit, then hand it on as it came.

        The API reads the whole body into memory anyway, so holding at most `max_bytes`
        here costs nothing extra; what it gains is that an endless or huge stream is cut
        off at the limit instead of being read to its end.
        """
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"over {self.max_bytes} bytes, chunked")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps(
            {
                "error": f"request body too large: {what}; this service accepts at most "
                f"{self.max_bytes} bytes ({SETTING})",
                "detail": [{"type": "body_too_large", "loc": ["body"], "limit": self.max_bytes}],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
