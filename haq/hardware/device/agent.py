"""The hardware-in-the-loop device agent (``haq device serve``).

The host builds candidate ONNX models and ships them (:mod:`.client`); the agent, on the
target, times them with the protocol of :mod:`haq.hardware.device` and returns the raw samples.
Timing never crosses the network. The agent needs only onnxruntime, numpy and the standard
library (no torch). The wire format is in :mod:`.wire`; the threat model in ``SECURITY.md``.

Safety:

- *Who may ask.* Every connection gets a fresh challenge; a request counts only when it carries
  the HMAC of that challenge and its own fields under the token (constant-time check, before
  any payload is read), so the token never crosses the network and nothing can be replayed.
  Replies are signed the same way. ``--tls-cert/--tls-key`` add encryption.
- *Slow or many clients.* The greeting, TLS handshake and request header must arrive within
  ``header_timeout_s`` of the connection; connections are capped in total and per address;
  every refusal is logged (rate-limited per address), with a timestamp.
- *What is run.* Model bytes are size-capped and only ever handed to onnxruntime as ONNX
  protobuf (never unpickled or executed), after :mod:`.guard` refused external data. Each
  measurement runs in a child process (:mod:`.worker`) in an empty directory with a capped
  address space and capped input sizes, killed at its time limit and when the agent stops.
- *What is said.* Errors carry the agent's own codes and words, never onnxruntime's text.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from haq import __version__
from haq.core import validate
from haq.core.config import from_dict
from haq.core.errors import ConfigError, DeviceError, HaqError
from haq.core.types import Log, quiet
from haq.hardware.device.guard import DEFAULT_MAX_INPUT_ELEMENTS
from haq.hardware.device.machine import device_info
from haq.hardware.device.settings import PROTOCOL_VERSION, ProtocolConfig
from haq.hardware.device.wire import (
    MAX_FRAME_BYTES,
    MAX_REPLY_BYTES,
    WIRE_VERSION,
    RequestError,
    error_reply,
    new_challenge,
    payload_digest,
    read_exact,
    read_frame,
    sign,
    signature_matches,
    write_frame,
)
from haq.hardware.device.worker import WorkerPool

DEFAULT_PORT = 8765
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_MEMORY_MB = 4096
MIN_TOKEN_CHARS = 16
UPLOAD_BYTES_PER_S = 1_000_000  # slowest link assumed when granting time to receive models
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AgentConfig:
    """How ``haq device serve`` listens and what it accepts.

    host / port: where to listen (127.0.0.1 unless the device must be reachable; port 0 = any).
    token: shared secret (>= 16 non-blank characters) that signs every request; never sent.
    max_bytes: cap on the model bytes of one request.
    timeout_s: cap on one measurement request, counted from its header (the child is killed).
    header_timeout_s: the TLS handshake and the signed request header must arrive within this
        many seconds of connecting.
    io_timeout_s: time granted to receive a request's models (plus 1 s per MB).
    max_connections / max_per_address: connections served at once, in all and from one
        address; more are told ``busy``.
    memory_mb: address-space cap of the measuring child process.
    max_input_elements: largest element count a model input may declare.
    tls_cert / tls_key: PEM files; when given, every connection is TLS.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = field(default="", repr=False)
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    header_timeout_s: float = 3.0
    io_timeout_s: float = 30.0
    max_connections: int = 8
    max_per_address: int = 4
    memory_mb: int = DEFAULT_MEMORY_MB
    max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("--host must not be empty (127.0.0.1 serves this machine only)")
        validate.count("--port", self.port, 0, 65535)
        check_token(self.token)
        validate.count("--max-bytes", self.max_bytes, 1, 2**31)
        validate.positive("--timeout", self.timeout_s)
        validate.finite("--timeout", self.timeout_s, high=86_400)
        validate.positive("header timeout", self.header_timeout_s)
        validate.finite("header timeout", self.header_timeout_s, high=60)
        validate.positive("io timeout", self.io_timeout_s)
        validate.finite("io timeout", self.io_timeout_s, high=3600)
        validate.count("max connections", self.max_connections, 1, 1024)
        validate.count("max connections per address", self.max_per_address, 1, 1024)
        validate.count("--memory-mb", self.memory_mb, 256, 1 << 22)
        validate.count("max input elements", self.max_input_elements, 1, 1 << 40)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together (the agent's certificate and its private key, PEM)")


def check_token(token: object) -> None:
    """A token is a secret of at least :data:`MIN_TOKEN_CHARS` non-blank characters."""
    if not isinstance(token, str) or sum(not c.isspace() for c in token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"--token must have at least {MIN_TOKEN_CHARS} non-blank characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("--token must be valid Unicode text") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def timestamped(log: Log) -> Log:
    """``log`` with each line prefixed by the local time (ISO 8601, with its UTC offset) and
    kept to one printable line, so text a client chose cannot forge log lines."""

    def write(msg: str) -> None:
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
        log(f"{datetime.now().astimezone().isoformat(timespec='seconds')} {line}")

    return write


@dataclass
class _Conversation:
    """One connection: its socket, the challenge it was given, and (once the request is
    authenticated) the request's signature that binds every reply to it."""

    sock: socket.socket
    challenge: str
    request_auth: str | None = None


class DeviceAgent:
    """The server: ``start()`` in a thread or ``serve_forever()``; ``close()`` stops it."""

    def __init__(self, cfg: AgentConfig, log: Log | None = None) -> None:
        self.cfg = cfg
        self._log = timestamped(log or quiet)
        self._tls = _server_tls(cfg)
        self._measure_lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._rejected: dict[str, tuple[float, int]] = {}
        self._pool = WorkerPool(cfg.memory_mb << 20, cfg.max_input_elements, self._log)
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
        """Kill running measurements, stop serving and release the port."""
        self._pool.kill_all()
        if self._served:  # shutdown() waits for a serve loop, and would hang without one
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> DeviceAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve_connection(self, raw: socket.socket, peer: Any) -> None:
        """Answer one connection; every failure becomes an error reply, never a crash."""
        addr = str(peer[0])
        accepted = time.monotonic()
        refusal = self._admit(addr)
        if refusal is not None:
            self._note_rejection(addr, refusal)
            sock = self._secure(raw, accepted + 1.0)
            if sock is not None:
                _try_send(sock, error_reply("busy", refusal))
                if sock is not raw:
                    sock.close()
            return
        try:
            sock = self._secure(raw, accepted + self.cfg.header_timeout_s)
            if sock is None:
                self._log(f"{addr}: refused: no TLS handshake within {self.cfg.header_timeout_s:g} s")
                return
            try:
                self._converse(_Conversation(sock, new_challenge()), addr, accepted)
            finally:
                if sock is not raw:
                    sock.close()
        finally:
            self._release(addr)

    def _converse(self, conv: _Conversation, addr: str, accepted: float) -> None:
        try:
            conv.sock.settimeout(max(accepted + self.cfg.header_timeout_s - time.monotonic(), 0.01))
            write_frame(conv.sock, {"ok": True, "op": "hello", "wire": WIRE_VERSION, "challenge": conv.challenge})
            reply = self._answer(conv, accepted)
        except RequestError as exc:
            reply = error_reply(exc.code, str(exc))
        except OSError as exc:  # the peer went away mid-request: nobody to answer
            self._log(f"{addr}: connection lost: {exc.strerror or type(exc).__name__}")
            return
        except Exception as exc:  # last line of defence: the agent must keep serving
            self._log(f"{addr}: internal error: {type(exc).__name__}: {str(exc)[:300]}")
            reply = error_reply("internal", f"the agent failed unexpectedly ({type(exc).__name__})")
        outcome = "ok" if reply.get("ok") else f"refused {reply.get('error')}"
        self._log(f"{addr}: {outcome} {str(reply.get('message', ''))[:300]}".rstrip())
        self._send(conv, reply)
        _drain_and_close(conv.sock)

    def _answer(self, conv: _Conversation, accepted: float) -> dict[str, Any]:
        header = read_frame(conv.sock, accepted + self.cfg.header_timeout_s)
        if not signature_matches(self.cfg.token, "request", conv.challenge, header):
            raise RequestError("unauthorized", "wrong or missing token (the request is not signed with this agent's token)")
        conv.request_auth = str(header["auth"])
        received = time.monotonic()
        op = header.get("op")
        if op == "ping":
            return self._ping_reply()
        if op != "measure":
            raise RequestError("bad_request", f"unknown op {str(op)[:40]!r}; valid: ping, measure")
        sizes, sentinel_size = self._check_sizes(header)
        digest = header.get("sha256")
        if not isinstance(digest, str) or not _HEX_DIGEST.fullmatch(digest):
            raise RequestError("bad_request", "'sha256' must be the 64 lowercase hex digits of the models' SHA-256")
        try:
            protocol = from_dict(ProtocolConfig, header.get("protocol") or {}, "protocol settings")
        except HaqError as exc:
            raise RequestError("bad_request", str(exc)[:500]) from exc
        deadline = received + _request_timeout(header.get("timeout_s"), self.cfg.timeout_s)
        self._send(conv, {"ok": True, "continue": True}, best_effort=False)
        total = sum(sizes) + sentinel_size
        upload_deadline = min(time.monotonic() + self.cfg.io_timeout_s + total / UPLOAD_BYTES_PER_S, deadline)
        payload = read_exact(conv.sock, total, upload_deadline)
        if payload_digest(payload) != digest:
            raise RequestError("bad_request", "the model bytes do not match the signed SHA-256 (altered in transit?)")
        if not self._measure_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise RequestError("busy", "another measurement kept the device busy for this request's whole time limit")
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError("timeout", "the request's time limit passed before its measurement could start")
            measurements = self._pool.run(protocol, sizes, sentinel_size, payload, left)
        finally:
            self._measure_lock.release()
        return {
            "ok": True,
            "device": self._device,
            "measurements": measurements,
            "message": f"{len(sizes)} model(s) in {time.monotonic() - received:.1f} s",
        }

    def _send(self, conv: _Conversation, reply: Mapping[str, Any], best_effort: bool = True) -> None:
        """Send a reply, signed (bound to the request) once the request was authenticated;
        ``best_effort``: a peer that has gone is not an error."""
        if conv.request_auth is not None:
            reply = {**reply, "auth": sign(self.cfg.token, "reply", conv.challenge, reply, conv.request_auth)}
        if best_effort:
            _try_send(conv.sock, reply)
        else:
            write_frame(conv.sock, reply, MAX_REPLY_BYTES)

    def _ping_reply(self) -> dict[str, Any]:
        return {
            "ok": True,
            "device": self._device,
            "agent": {
                "haq": __version__,
                "protocol_version": PROTOCOL_VERSION,
                "wire": WIRE_VERSION,
                "tls": self._tls is not None,
                "max_bytes": self.cfg.max_bytes,
                "timeout_s": self.cfg.timeout_s,
                "memory_mb": self.cfg.memory_mb,
                "max_input_elements": self.cfg.max_input_elements,
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
            shown = total if total < 10**18 else "more than 10^18"
            raise RequestError("too_large", f"request carries {shown} bytes of models; this agent accepts at most {limit}")
        return sizes, sentinel_size

    def _admit(self, addr: str) -> str | None:
        """Count a new connection in, or say why it is refused."""
        with self._conn_lock:
            if self._open.get(addr, 0) >= self.cfg.max_per_address:
                return f"too many connections from {addr} (at most {self.cfg.max_per_address}); try again later"
            if sum(self._open.values()) >= self.cfg.max_connections:
                return "too many connections; try again later"
            self._open[addr] = self._open.get(addr, 0) + 1
        return None

    def _release(self, addr: str) -> None:
        with self._conn_lock:
            left = self._open.get(addr, 0) - 1
            if left > 0:
                self._open[addr] = left
            else:
                self._open.pop(addr, None)

    def _note_rejection(self, addr: str, reason: str) -> None:
        """Log a refused connection; at most one line per address per second (with a count of
        the ones folded into it), so a flood cannot flood the log."""
        now = time.monotonic()
        with self._conn_lock:
            last, folded = self._rejected.get(addr, (-1.0, 0))
            if last >= 0 and now - last < 1.0:
                self._rejected[addr] = (last, folded + 1)
                return
            if len(self._rejected) > 1024:
                self._rejected.clear()
            self._rejected[addr] = (now, 0)
        more = f" ({folded} more refused since the last line)" if folded else ""
        self._log(f"{addr}: refused busy: {reason}{more}")

    def _secure(self, raw: socket.socket, deadline: float) -> socket.socket | None:
        """The connection's socket: ``raw``, or TLS over it after a handshake that finished
        before ``deadline`` (None when it did not)."""
        if self._tls is None:
            return raw
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(max(deadline - time.monotonic(), 0.01))
            tls = self._tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
            return tls
        except (OSError, ValueError):
            if tls is not None:
                tls.close()
            return None


def _server_tls(cfg: AgentConfig) -> ssl.SSLContext | None:
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --tls-cert {cfg.tls_cert} / --tls-key {cfg.tls_key}: {exc.strerror or exc}") from exc
    return ctx


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
    except (OSError, ValueError):
        pass


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _request_timeout(asked: object, cap: float) -> float:
    """The client's wish, never above the agent's cap."""
    if asked is None:
        return cap
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 0 < asked < float("inf"):
        raise RequestError("bad_request", f"'timeout_s' must be a positive number, got {str(asked)[:40]!r}")
    return cap if asked >= cap else float(asked)
