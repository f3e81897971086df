"""The agent's wire format: length-prefixed JSON frames over TCP, one request per connection.

A *frame* is the 4 bytes ``HAQ1``, a 4-byte big-endian length (at most 64 KiB for a request)
and that many bytes of UTF-8 JSON.

1. Client sends a request frame ``{"op": "ping" | "measure", "token": ..., "protocol": {...},
   "sizes": [bytes of each model], "sentinel_size": n, "timeout_s": t}``; ``protocol`` is the
   JSON object of :class:`~haq.hardware.device.settings.ProtocolConfig` fields.
2. For ``ping`` the agent answers a reply frame at once. For ``measure`` it checks the token
   and sizes first and answers ``{"ok": true, "continue": true}`` (or an error, and closes), so
   nothing large is ever sent before it is accepted.
3. Client sends the model bytes back to back (sentinel last), then reads the reply frame
   ``{"ok": bool, "error": code, "message": ..., "device": {...}, "measurements": [...]}``.

Error codes: ``bad_request``, ``unauthorized``, ``too_large``, ``bad_model``, ``timeout``,
``busy``, ``internal``.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Mapping

MAGIC = b"HAQ1"
MAX_FRAME_BYTES = 64 * 1024
MAX_REPLY_BYTES = 256 * 1024 * 1024


class RequestError(Exception):
    """A request the agent refuses; carries the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def write_frame(sock: socket.socket, obj: Mapping[str, Any], limit: int = MAX_FRAME_BYTES) -> None:
    """Send one JSON frame."""
    body = json.dumps(obj).encode("utf-8")
    if len(body) > limit:
        raise RequestError("bad_request", f"frame of {len(body)} bytes exceeds {limit}")
    sock.sendall(MAGIC + struct.pack(">I", len(body)) + body)


def read_frame(sock: socket.socket, deadline: float, limit: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Receive one JSON-object frame of at most ``limit`` bytes before ``deadline`` (monotonic)."""
    head = read_exact(sock, 8, deadline)
    if head[:4] != MAGIC:
        raise RequestError("bad_request", "not a haq device request (bad magic bytes)")
    (length,) = struct.unpack(">I", head[4:])
    if length > limit:
        raise RequestError("bad_request", f"frame of {length} bytes exceeds the {limit}-byte limit")
    try:
        obj = json.loads(read_exact(sock, length, deadline).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError("bad_request", f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RequestError("bad_request", "header must be a JSON object")
    return obj


def read_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes, or :class:`RequestError` on close or when ``deadline`` passes."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestError("timeout", f"request not received in time ({got} of {n} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            raise RequestError("timeout", f"request not received in time ({got} of {n} bytes)") from None
        if not chunk:
            raise RequestError("bad_request", f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def error_reply(code: str, message: str) -> dict[str, Any]:
    """A refusal as the agent sends it."""
    return {"ok": False, "error": code, "message": message}
