"""The agent's wire format: length-prefixed JSON frames over TCP (or TLS), one request per
connection, authenticated by an HMAC challenge-response so the token never crosses the network.

A *frame* is the 4 bytes ``HAQ1``, a 4-byte big-endian length (at most 64 KiB for a request)
and that many bytes of UTF-8 JSON: one object, nested at most :data:`MAX_DEPTH` deep, without
lone surrogates.

1. On connect the agent sends a hello frame ``{"ok": true, "op": "hello", "wire": 2,
   "challenge": <64 hex digits, fresh per connection>}`` (or a ``busy`` error, and closes).
2. Client sends a request frame ``{"op": "ping" | "measure", "nonce": <fresh hex>, "protocol":
   {...}, "sizes": [bytes of each model], "sentinel_size": n, "sha256": <hex of the model
   bytes>, "timeout_s": t, "auth": <hex>}``; ``protocol`` is the JSON object of
   :class:`~haq.hardware.device.settings.ProtocolConfig` fields and ``auth`` is
   :func:`sign` (token, ``request``, challenge, the other fields).
3. For ``ping`` the agent answers a reply frame at once. For ``measure`` it checks the
   signature and sizes first and answers ``{"ok": true, "continue": true}`` (or an error, and
   closes), so nothing large is ever sent before it is accepted.
4. Client sends the model bytes back to back (sentinel last); the agent checks them against
   ``sha256`` and answers ``{"ok": bool, "error": code, "message": ..., "device": {...},
   "measurements": [...]}``.

Every reply to an authenticated request carries ``auth`` = :func:`sign` (token, ``reply``,
challenge, the reply's other fields, bound to the request's ``auth``), so a client accepts
measurements only from the agent that knows the token, for this request: a recorded exchange
cannot be replayed in either direction and a man in the middle can neither learn the token nor
alter models or timings unnoticed (he can read them: serve TLS for confidentiality).

Error codes: ``bad_request``, ``unauthorized``, ``too_large``, ``bad_model``, ``timeout``,
``busy``, ``internal``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import struct
import time
from typing import Any, Mapping

MAGIC = b"HAQ1"
WIRE_VERSION = 2
MAX_FRAME_BYTES = 64 * 1024
MAX_REPLY_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 32
CHALLENGE_BYTES = 32
ERROR_CODES = ("bad_request", "unauthorized", "too_large", "bad_model", "timeout", "busy", "internal")


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
        raise RequestError("bad_request", "not a haq device frame (bad magic bytes)")
    (length,) = struct.unpack(">I", head[4:])
    if length > limit:
        raise RequestError("bad_request", f"frame of {length} bytes exceeds the {limit}-byte limit")
    return parse_body(read_exact(sock, length, deadline))


def parse_body(body: bytes) -> dict[str, Any]:
    """A frame's JSON object; anything else (bad UTF-8 or JSON, a 5000-digit number, nesting
    deeper than :data:`MAX_DEPTH`, lone surrogates) is a ``bad_request``."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else type(exc).__name__
        raise RequestError("bad_request", f"frame is not UTF-8 JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise RequestError("bad_request", "frame must be a JSON object")
    _check_tree(obj)
    return obj


def _check_tree(obj: object) -> None:
    """Depth and text checks without recursion, so no request can exhaust the stack."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError("bad_request", f"frame nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                _check_text(key)
                stack.append((value, depth + 1))
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("bad_request", "frame contains a lone surrogate (not valid Unicode text)") from None


def read_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes, or :class:`RequestError` on close or when ``deadline`` passes."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestError("timeout", f"not received in time ({got} of {n} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            raise RequestError("timeout", f"not received in time ({got} of {n} bytes)") from None
        if not chunk:
            raise RequestError("bad_request", f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def error_reply(code: str, message: str) -> dict[str, Any]:
    """A refusal as the agent sends it."""
    return {"ok": False, "error": code, "message": message}


def new_challenge() -> str:
    """A fresh random challenge (hex) for one connection."""
    return secrets.token_hex(CHALLENGE_BYTES)


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII; a JSON round trip first, so
    sender and receiver sign the same value whatever the sender's Python types."""
    plain = json.loads(json.dumps(obj))
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign(token: str, label: str, challenge: str, fields: Mapping[str, Any], bound: str = "") -> str:
    """HMAC-SHA256 (hex) keyed by the token over the challenge, ``bound`` (the request's
    signature, for replies) and the canonical fields; ``label`` keeps requests and replies apart."""
    parts = (f"haq-device/{WIRE_VERSION}", label, challenge, bound)
    msg = b"\0".join([*(p.encode() for p in parts), canonical(fields)])
    return hmac.new(token.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def signature_matches(token: str, label: str, challenge: str, frame: Mapping[str, Any], bound: str = "") -> bool:
    """Whether ``frame["auth"]`` signs the frame's other fields (constant-time comparison)."""
    auth = frame.get("auth")
    if not isinstance(auth, str) or not auth.isascii():
        return False
    fields = {k: v for k, v in frame.items() if k != "auth"}
    return hmac.compare_digest(auth.encode("ascii"), sign(token, label, challenge, fields, bound).encode("ascii"))


def payload_digest(payload: bytes) -> str:
    """SHA-256 (hex) of the model bytes, which the signed request carries."""
    return hashlib.sha256(payload).hexdigest()
