"""A cap on request bodies, enforced before FastAPI reads them: by Content-Length, and again
while the body streams in, so a client that lies about (or omits) its length cannot make the
service buffer more than the cap."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import HTTPException

ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class _TooLarge(HTTPException):
    """A body over its cap, noticed while it streams in (FastAPI passes HTTP exceptions through body parsing)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _detail(limit))


class BodyLimit:
    """Refuses a request body over its cap with 413 (by Content-Length, and while it streams in).

    ``PUT /tables/...`` (a table upload) gets ``table_limit``, everything else ``limit``.
    """

    def __init__(self, app: ASGIApp, limit: int, table_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.table_limit = table_limit

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope.get("method") == "PUT" and str(scope.get("path", "")).startswith("/tables/")
        limit = self.table_limit if is_upload else self.limit
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _send_413(send, limit)
                    return
        received = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(send, limit)


async def _send_413(send: Callable[[Any], Awaitable[None]], limit: int) -> None:
    body = json.dumps({"detail": _detail(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _detail(limit: int) -> str:
    return f"body: request body over the {limit}-byte limit"
