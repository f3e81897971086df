"""The host's side of the device agent: send models, get :class:`Measurement` records back."""

from __future__ import annotations

import socket
import time
from typing import Any, Sequence

from haq.core import validate
from haq.core.config import to_dict
from haq.core.errors import DeviceError, HaqError
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.wire import MAX_REPLY_BYTES, RequestError, read_frame, write_frame

DEFAULT_TIMEOUT_S = 600.0
REPLY_MARGIN_S = 30.0


class DeviceClient:
    """Talks to one agent; every failure is a :class:`DeviceError` naming the address."""

    def __init__(self, host: str, port: int, token: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        validate.positive("device timeout", timeout)
        validate.finite("device timeout", timeout, high=86_400)
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
            "protocol": to_dict(protocol),
            "sizes": [len(m) for m in models],
            "sentinel_size": len(sentinel or b""),
            "timeout_s": self.timeout,
        }
        reply = self._request(header, b"".join(bytes(m) for m in models) + (sentinel or b""))
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
