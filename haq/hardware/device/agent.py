"""The hardware-in-the-loop device agent (``haq device serve``).

The host builds candidate ONNX models and ships them (:mod:`.client`); the agent, on the
target, times them with the protocol of :mod:`haq.hardware.device` and returns the raw samples.
Timing never crosses the network. The agent needs only onnxruntime, numpy and the standard
library (no torch). The wire format is in :mod:`.wire`.

Safety: the token is compared in constant time and checked before any payload is read; model
bytes are size-capped and only ever handed to onnxruntime as ONNX protobuf (never unpickled or
executed); each measurement runs in a child process (:mod:`.worker`) started in an empty
directory, killed when its time limit passes, so a hostile or runaway model cannot hang or
crash the agent; reads have an overall deadline; one measurement runs at a time and
connections are capped.
"""

from __future__ import annotations

import hmac
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

from haq import __version__
from haq.core import validate
from haq.core.config import from_dict
from haq.core.errors import ConfigError, DeviceError, HaqError
from haq.core.types import Log, quiet
from haq.hardware.device.machine import device_info
from haq.hardware.device.settings import PROTOCOL_VERSION, ProtocolConfig
from haq.hardware.device.wire import (
    MAX_FRAME_BYTES,
    MAX_REPLY_BYTES,
    RequestError,
    error_reply,
    read_exact,
    read_frame,
    write_frame,
)
from haq.hardware.device.worker import run_worker

DEFAULT_PORT = 8765
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 600.0
UPLOAD_BYTES_PER_S = 1_000_000  # slowest link assumed when granting time to receive models


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
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("--host must not be empty (127.0.0.1 serves this machine only)")
        validate.count("--port", self.port, 0, 65535)
        if not isinstance(self.token, str) or len(self.token) < 8:
            raise ConfigError("--token must be at least 8 characters (a shared secret the host also passes)")
        validate.count("--max-bytes", self.max_bytes, 1, 2**31)
        validate.positive("--timeout", self.timeout_s)
        validate.finite("--timeout", self.timeout_s, high=86_400)
        validate.positive("io timeout", self.io_timeout_s)
        validate.finite("io timeout", self.io_timeout_s, high=3600)
        validate.count("max connections", self.max_connections, 1, 1024)


class DeviceAgent:
    """The server: ``start()`` in a thread or ``serve_forever()``; ``close()`` stops it."""

    def __init__(self, cfg: AgentConfig, log: Log | None = None) -> None:
        self.cfg = cfg
        self._log = log or quiet
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
            _try_send(sock, error_reply("busy", "too many connections; try again later"))
            return
        try:
            reply = self._answer(sock)
        except RequestError as exc:
            reply = error_reply(exc.code, str(exc))
        except Exception as exc:  # last line of defence: the agent must keep serving
            reply = error_reply("internal", f"{type(exc).__name__}: {exc}")
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
            protocol = from_dict(ProtocolConfig, header.get("protocol") or {}, "protocol settings")
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
            limit = self.cfg.max_bytes
            raise RequestError("too_large", f"request carries {total} bytes of models; this agent accepts at most {limit}")
        return sizes, sentinel_size


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


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _request_timeout(asked: object, cap: float) -> float:
    """The client's wish, never above the agent's cap."""
    if asked is None:
        return cap
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 0 < asked < float("inf"):
        raise RequestError("bad_request", f"'timeout_s' must be a positive number, got {asked!r}")
    return min(float(asked), cap)
