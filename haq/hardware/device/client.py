"""The host's side of the device agent: send models, get :class:`Measurement` records back.

The client answers the agent's challenge with an HMAC under the token (the token itself is
never sent), signs its request fields and the models' digest, and accepts a successful reply
only when the agent signed it for this very request (:mod:`.wire`). With ``tls_ca`` it speaks
TLS and checks the agent's certificate against that file. ``timeout`` bounds the whole
exchange: the agent is told it, and the client gives up a few seconds after it.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import time
from typing import Any, Sequence

from haq.core import validate
from haq.core.config import to_dict
from haq.core.errors import ConfigError, DeviceError, HaqError
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import (
    MAX_REPLY_BYTES,
    WIRE_VERSION,
    RequestError,
    payload_digest,
    read_frame,
    sign,
    signature_matches,
    write_frame,
)

DEFAULT_TIMEOUT_S = 600.0
REPLY_MARGIN_S = 5.0  # the agent answers a request that ran out of time within this margin
_CHALLENGE = re.compile(r"[0-9a-f]{16,128}")


class DeviceClient:
    """Talks to one agent; every failure is a :class:`DeviceError` naming the address."""

    def __init__(self, host: str, port: int, token: str, timeout: float = DEFAULT_TIMEOUT_S, tls_ca: str | None = None) -> None:
        validate.positive("device timeout", timeout)
        validate.finite("device timeout", timeout, high=86_400)
        if not isinstance(token, str) or not token:
            raise ConfigError("the device agent's token must be a non-empty string")
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError("the device agent's token must be valid Unicode text") from None
        self.host, self.port, self._token, self.timeout = host, port, token, timeout
        self._tls = _client_tls(tls_ca)

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
        payload = b"".join(bytes(m) for m in models) + (sentinel or b"")
        header = {
            "op": "measure",
            "protocol": to_dict(protocol),
            "sizes": [len(m) for m in models],
            "sentinel_size": len(sentinel or b""),
            "sha256": payload_digest(payload),
            "timeout_s": self.timeout,
        }
        reply = self._request(header, payload)
        records = reply.get("measurements")
        if not isinstance(records, list) or len(records) != len(models):
            got = len(records) if isinstance(records, list) else "no"
            raise DeviceError(f"{self.address} answered {got} measurements for {len(models)} models")
        try:
            return [Measurement.from_dict(r) for r in records]
        except HaqError as exc:
            raise DeviceError(f"{self.address} sent a malformed measurement: {exc}") from exc

    def _request(self, header: dict[str, Any], payload: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout + REPLY_MARGIN_S
        phase = "connect"
        try:
            with socket.create_connection((self.host, self.port), timeout=min(10.0, self.timeout)) as raw:
                sock = self._tls.wrap_socket(raw, server_hostname=self.host) if self._tls else raw
                try:
                    phase = "greeting"
                    challenge = self._challenge(read_frame(sock, deadline))
                    phase = "reply"
                    fields = {**header, "nonce": secrets.token_hex(16)}
                    auth = sign(self._token, "request", challenge, fields)
                    write_frame(sock, {**fields, "auth": auth})
                    reply = self._reply(sock, deadline, challenge, auth)
                    if reply.get("continue"):
                        sock.settimeout(max(deadline - time.monotonic(), 0.01))
                        sock.sendall(payload)
                        reply = self._reply(sock, deadline, challenge, auth)
                finally:
                    if sock is not raw:
                        sock.close()
        except RequestError as exc:
            raise DeviceError(self._unreadable(phase, exc)) from exc
        except ssl.SSLError as exc:
            raise DeviceError(f"TLS with the device agent at {self.address} failed: {exc.reason or exc}") from exc
        except socket.timeout as exc:
            raise DeviceError(f"device agent at {self.address} did not answer within the {self.timeout:g} s timeout") from exc
        except OSError as exc:
            raise DeviceError(f"cannot reach device agent at {self.address}: {exc.strerror or exc}") from exc
        return reply

    def _challenge(self, hello: dict[str, Any]) -> str:
        if not hello.get("ok"):
            raise self._refused(hello)
        challenge = hello.get("challenge")
        if hello.get("wire") != WIRE_VERSION or not isinstance(challenge, str) or not _CHALLENGE.fullmatch(challenge):
            raise DeviceError(f"{self.address} does not speak haq device wire version {WIRE_VERSION} (update haq on one side)")
        return challenge

    def _reply(self, sock: socket.socket, deadline: float, challenge: str, auth: str) -> dict[str, Any]:
        reply = read_frame(sock, deadline, MAX_REPLY_BYTES)
        if not reply.get("ok"):
            raise self._refused(reply)
        if not signature_matches(self._token, "reply", challenge, reply, bound=auth):
            raise DeviceError(f"the reply from {self.address} is not signed with the token (altered in transit or not the agent)")
        return reply

    def _refused(self, reply: dict[str, Any]) -> DeviceError:
        code = str(reply.get("error", "?"))[:40]
        return DeviceError(f"device agent at {self.address} refused: {code}: {str(reply.get('message', ''))[:500]}")

    def _unreadable(self, phase: str, exc: RequestError) -> str:
        if exc.code == "timeout":
            return f"device agent at {self.address} did not answer within the {self.timeout:g} s timeout"
        if phase == "greeting":
            hint = "an agent that serves TLS needs --tls-ca" if self._tls is None else "is it a haq device agent?"
            return f"{self.address} did not greet like a haq device agent ({exc}); {hint}"
        return f"{self.address} sent an unreadable reply: {exc}"


def _client_tls(tls_ca: str | None) -> ssl.SSLContext | None:
    """A TLS context that trusts only ``tls_ca`` (the agent's certificate or its CA, PEM)."""
    if tls_ca is None:
        return None
    try:
        ctx = ssl.create_default_context(cafile=tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --tls-ca {tls_ca}: {exc.strerror or exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
