"""The hardware-in-the-loop device agent (``haq device serve``) and its client.

The host builds candidate ONNX models and ships them; the agent, on the target, times them
with :mod:`haq.hardware.device.protocol` and returns the raw samples. Timing never crosses the
network. The agent needs only onnxruntime, numpy and the standard library (no torch).

Wire format (TCP, one request per connection). A *frame* is the 4 bytes ``HAQ1``, a 4-byte
big-endian length (at most 64 KiB) and that many bytes of UTF-8 JSON.

1. Client sends a request frame ``{"op": "ping" | "measure", "token": ..., "protocol": {...},
   "sizes": [bytes of each model], "sentinel_size": n, "timeout_s": t}``.
2. For ``ping`` the agent answers a reply frame at once. For ``measure`` it checks the token
   and sizes first and answers ``{"ok": true, "continue": true}`` (or an error, and closes), so
   nothing large is ever sent before it is accepted.
3. Client sends the model bytes back to back (sentinel last), then reads the reply frame
   ``{"ok": bool, "error": code, "message": ..., "device": {...}, "measurements": [...]}``.

Error codes: ``bad_request``, ``unauthorized``, ``too_large``, ``bad_model``, ``timeout``,
``busy``, ``internal``.

Safety: the token is compared in constant time and checked before any payload is read; model
bytes are size-capped and only ever handed to onnxruntime as ONNX protobuf (never unpickled or
executed); each measurement runs in a child process started in an empty directory, killed when
its time limit passes, so a hostile or runaway model cannot hang or crash the agent; reads have
an overall deadline; one measurement runs at a time and connections are capped.
"""

from __future__ import annotations

import hmac
import json
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from haq import __version__
from haq.core.errors import DeviceError, HaqError
from haq.core.types import Log
from haq.hardware.device.protocol import (
    PROTOCOL_VERSION,
    MeasureError,
    Measurement,
    ProtocolConfig,
    device_info,
    measure_models,
)

MAGIC = b"HAQ1"
MAX_FRAME_BYTES = 64 * 1024
MAX_REPLY_BYTES = 256 * 1024 * 1024
DEFAULT_PORT = 8765
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT_S = 600.0
REPLY_MARGIN_S = 30.0
UPLOAD_BYTES_PER_S = 1_000_000  # slowest link assumed when granting time to receive models
_WORKER_CODE = "from haq.hardware.device.agent import worker_main; worker_main()"


@dataclass(frozen=True)
class AgentConfig:
    """How ``haq device serve`` listens and what it accepts.

    host / port: where to listen (127.0.0.1 unless the device must be reachable; port 0 = any).
    token: shared secret every request must carry.
    max_bytes: cap on the model bytes of one request.
    timeout_s: cap on one measurement request (the child process is killed after it).
    io_timeout_s: limit for receiving a request header, and (plus 1 s per MB) its models.
    max_connections: connections served at once; more are told ``busy``.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = ""
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    io_timeout_s: float = 30.0
    max_connections: int = 8

    def __post_init__(self) -> None:
        if not self.host:
            raise DeviceError("--host must not be empty (127.0.0.1 serves this machine only)")
        if not 0 <= self.port <= 65535:
            raise DeviceError(f"--port must be in 0..65535, got {self.port}")
        if len(self.token) < 8:
            raise DeviceError("--token must be at least 8 characters (a shared secret the host also passes)")
        if not 1 <= self.max_bytes <= 2**31:
            raise DeviceError(f"--max-bytes must be in 1..{2**31}, got {self.max_bytes}")
        if not 0 < self.timeout_s <= 86_400:
            raise DeviceError(f"--timeout must be in (0, 86400] seconds, got {self.timeout_s}")
        if not 0 < self.io_timeout_s <= 3600:
            raise DeviceError(f"io timeout must be in (0, 3600] seconds, got {self.io_timeout_s}")
        if not 1 <= self.max_connections <= 1024:
            raise DeviceError(f"max connections must be in 1..1024, got {self.max_connections}")


class RequestError(Exception):
    """A request the agent refuses; carries the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DeviceAgent:
    """The server: ``start()`` in a thread or ``serve_forever()``; ``close()`` stops it."""

    def __init__(self, cfg: AgentConfig, log: Log | None = None) -> None:
        self.cfg = cfg
        self._log = log or (lambda msg: None)
        self._measure_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(cfg.max_connections)
        self._device = device_info()
        agent = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                agent._serve_connection(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET

        try:
            self._server = Server((cfg.host, cfg.port), Handler)
        except OSError as exc:
            raise DeviceError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}") from exc
        self._thread: threading.Thread | None = None
        self._served = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is real even when 0 was asked for."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Serve until :meth:`close` (or Ctrl-C in the caller)."""
        self._served = True
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> DeviceAgent:
        """Serve in a background daemon thread (tests, embedding)."""
        self._served = True
        self._thread = threading.Thread(target=self.serve_forever, name="haq-device-agent", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._served:  # shutdown() waits for a serve loop, and would hang without one
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> DeviceAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve_connection(self, sock: socket.socket, peer: Any) -> None:
        """Answer one connection; every failure becomes an error reply, never a crash."""
        if not self._slots.acquire(blocking=False):
            _try_send(sock, _error("busy", "too many connections; try again later"))
            return
        try:
            reply = self._answer(sock)
        except RequestError as exc:
            reply = _error(exc.code, str(exc))
        except Exception as exc:  # last line of defence: the agent must keep serving
            reply = _error("internal", f"{type(exc).__name__}: {exc}")
        finally:
            self._slots.release()
        self._log(f"{peer[0]}: {'ok' if reply.get('ok') else reply.get('error')} {reply.get('message', '')}".rstrip())
        _try_send(sock, reply)
        _drain_and_close(sock)

    def _answer(self, sock: socket.socket) -> dict[str, Any]:
        deadline = time.monotonic() + self.cfg.io_timeout_s
        header = read_frame(sock, deadline)
        op = header.get("op")
        token = header.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.cfg.token.encode()):
            raise RequestError("unauthorized", "wrong or missing token")
        if op == "ping":
            return self._ping_reply()
        if op != "measure":
            raise RequestError("bad_request", f"unknown op {op!r}; valid: ping, measure")
        sizes, sentinel_size = self._check_sizes(header)
        try:
            protocol = ProtocolConfig.from_dict(header.get("protocol") or {})
        except HaqError as exc:
            raise RequestError("bad_request", str(exc)) from exc
        timeout = _request_timeout(header.get("timeout_s"), self.cfg.timeout_s)
        write_frame(sock, {"ok": True, "continue": True})
        total = sum(sizes) + sentinel_size
        upload_s = self.cfg.io_timeout_s + total / UPLOAD_BYTES_PER_S
        payload = read_exact(sock, total, time.monotonic() + upload_s)
        start = time.monotonic()
        if not self._measure_lock.acquire(timeout=timeout):
            raise RequestError("busy", f"another measurement kept the device busy for {timeout:.0f} s")
        try:
            left = max(timeout - (time.monotonic() - start), 0.1)
            measurements = run_worker(protocol, sizes, sentinel_size, payload, left)
        finally:
            self._measure_lock.release()
        return {
            "ok": True,
            "device": self._device,
            "measurements": measurements,
            "message": f"{len(sizes)} model(s) in {time.monotonic() - start:.1f} s",
        }

    def _ping_reply(self) -> dict[str, Any]:
        return {
            "ok": True,
            "device": self._device,
            "agent": {
                "haq": __version__,
                "protocol_version": PROTOCOL_VERSION,
                "max_bytes": self.cfg.max_bytes,
                "timeout_s": self.cfg.timeout_s,
            },
        }

    def _check_sizes(self, header: Mapping[str, Any]) -> tuple[list[int], int]:
        sizes = header.get("sizes")
        sentinel_size = header.get("sentinel_size", 0)
        if not isinstance(sizes, list) or not sizes or not all(_is_count(s) and s > 0 for s in sizes):
            raise RequestError("bad_request", "'sizes' must be a non-empty list of positive byte counts")
        if not _is_count(sentinel_size):
            raise RequestError("bad_request", "'sentinel_size' must be a byte count >= 0")
        total = sum(sizes) + sentinel_size
        if total > self.cfg.max_bytes:
            raise RequestError("too_large", f"request carries {total} bytes of models; this agent accepts at most {self.cfg.max_bytes}")
        return sizes, sentinel_size


def run_worker(protocol: ProtocolConfig, sizes: Sequence[int], sentinel_size: int, payload: bytes, timeout: float) -> list[dict[str, Any]]:
    """Measure in a child process in an empty directory; kill it when ``timeout`` passes."""
    job = json.dumps({"protocol": protocol.to_dict(), "sizes": list(sizes), "sentinel_size": sentinel_size}).encode()
    stdin = struct.pack(">I", len(job)) + job + payload
    with tempfile.TemporaryDirectory(prefix="haq-agent-") as cwd:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RequestError("timeout", f"measurement exceeded its {timeout:.0f} s limit and was killed") from None
    try:
        result = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        tail = err.decode("utf-8", "replace").strip().splitlines()
        raise RequestError("internal", f"measurement process died (exit {proc.returncode}): {tail[-1] if tail else 'no output'}") from None
    if not result.get("ok"):
        raise RequestError(str(result.get("error", "internal")), str(result.get("message", "measurement failed")))
    return list(result["measurements"])


def worker_main() -> None:
    """Child process: read a job from stdin, measure, print one JSON result to stdout."""
    data = sys.stdin.buffer.read()
    try:
        (n,) = struct.unpack(">I", data[:4])
        job = json.loads(data[4 : 4 + n].decode("utf-8"))
        protocol = ProtocolConfig.from_dict(job["protocol"])
        blob = data[4 + n :]
        models, offset = [], 0
        for size in job["sizes"]:
            models.append(blob[offset : offset + size])
            offset += size
        sentinel = blob[offset : offset + job["sentinel_size"]] or None
        results = measure_models(models, protocol, sentinel)
        reply: dict[str, Any] = {"ok": True, "measurements": [m.to_dict() for m in results]}
    except MeasureError as exc:
        reply = _error("bad_model", str(exc))
    except Exception as exc:  # report, never a traceback on the agent's console
        reply = _error("internal", f"{type(exc).__name__}: {exc}")
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()


class DeviceClient:
    """Talks to one agent; every failure is a :class:`DeviceError` naming the address."""

    def __init__(self, host: str, port: int, token: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if not 0 < timeout <= 86_400:
            raise DeviceError(f"device timeout must be in (0, 86400] seconds, got {timeout}")
        self.host, self.port, self._token, self.timeout = host, port, token, timeout

    @property
    def address(self) -> str:
        """``remote://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"remote://{host}:{self.port}"

    def ping(self) -> dict[str, Any]:
        """The agent's device info and limits."""
        reply = self._request({"op": "ping"}, b"")
        return {**reply.get("device", {}), "agent": reply.get("agent", {})}

    def measure(self, models: Sequence[bytes], protocol: ProtocolConfig, sentinel: bytes | None = None) -> list[Measurement]:
        """Time ``models`` on the device; returns one :class:`Measurement` per model."""
        if not models:
            return []
        header = {
            "op": "measure",
            "protocol": protocol.to_dict(),
            "sizes": [len(m) for m in models],
            "sentinel_size": len(sentinel or b""),
            "timeout_s": self.timeout,
        }
        reply = self._request(header, b"".join(bytes(m) for m in models) + (sentinel or b""))
        records = reply.get("measurements")
        if not isinstance(records, list) or len(records) != len(models):
            raise DeviceError(f"{self.address} answered {len(records) if isinstance(records, list) else 'no'} measurements for {len(models)} models")
        try:
            return [Measurement.from_dict(r) for r in records]
        except HaqError as exc:
            raise DeviceError(f"{self.address} sent a malformed measurement: {exc}") from exc

    def _request(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout + REPLY_MARGIN_S
        try:
            with socket.create_connection((self.host, self.port), timeout=min(10.0, self.timeout)) as sock:
                write_frame(sock, {**header, "token": self._token})
                reply = read_frame(sock, deadline, MAX_REPLY_BYTES)
                if reply.get("continue") and reply.get("ok"):
                    sock.sendall(payload)
                    reply = read_frame(sock, deadline, MAX_REPLY_BYTES)
        except RequestError as exc:
            raise DeviceError(f"{self.address} sent an unreadable reply: {exc}") from exc
        except OSError as exc:
            raise DeviceError(f"cannot reach device agent at {self.address}: {exc.strerror or exc}") from exc
        if not reply.get("ok"):
            raise DeviceError(f"device agent at {self.address} refused: {reply.get('error', '?')}: {reply.get('message', '')}")
        return reply


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


def _try_send(sock: socket.socket, reply: Mapping[str, Any]) -> None:
    """Best effort: the peer may already be gone."""
    try:
        sock.settimeout(5.0)
        write_frame(sock, reply, MAX_REPLY_BYTES)
    except (OSError, RequestError):
        pass


def _drain_and_close(sock: socket.socket, limit: int = MAX_FRAME_BYTES, wait_s: float = 1.0) -> None:
    """Half-close, then read what the peer still sends (bounded), so closing with unread bytes
    does not reset the connection and destroy the reply before the peer reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + wait_s
        got = 0
        while got < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(limit - got)
            if not chunk:
                break
            got += len(chunk)
    except OSError:
        pass


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": code, "message": message}


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _request_timeout(asked: object, cap: float) -> float:
    """The client's wish, never above the agent's cap."""
    if asked is None:
        return cap
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 0 < asked < float("inf"):
        raise RequestError("bad_request", f"'timeout_s' must be a positive number, got {asked!r}")
    return min(float(asked), cap)
