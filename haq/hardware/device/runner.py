"""Runners: where models are timed. Same interface here (local) and on a device (remote).

Builders and the hardware-feedback cost source take a :class:`Runner` and never care whether
the timing happens in this process or on a phone across the network; ``make_runner`` turns the
``--device`` string of the command line into one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from haq.core.config import to_dict
from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.hardware.device.client import DEFAULT_TIMEOUT_S, DeviceClient
from haq.hardware.device.journal import SessionJournal
from haq.hardware.device.machine import device_info
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.sentinel import sentinel_model
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models

REMOTE_PREFIX = "remote://"
TOKEN_ENV = "HAQ_DEVICE_TOKEN"
"""The environment variable that holds a device agent's shared secret when no token is passed."""
TLS_CA_ENV = "HAQ_DEVICE_TLS_CA"
"""The environment variable that names the certificate (PEM) of an agent serving TLS when none is passed."""


@dataclass(frozen=True)
class RemoteAccess:
    """What reaching a device agent takes besides its address: the shared secret and, for an
    agent that serves TLS, the certificate or CA (PEM file) to trust."""

    token: str | None = None
    tls_ca: str | None = None


class Runner(Protocol):
    """Times ONNX models with the protocol and says what it ran on."""

    protocol: ProtocolConfig

    def measure(self, onnx_bytes: bytes) -> Measurement:
        """Time one model."""
        ...

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        """Time several models, interleaved across sessions so drift hits all alike."""
        ...

    def device_info(self) -> dict[str, Any]:
        """CPU model, runtime version, threads, ... of the machine that times."""
        ...


class LocalRunner:
    """Times models in this process (the host is the device).

    journal: where a batch records each session as it is timed (:mod:`haq.hardware.device.journal`),
        so that the same batch timed again after a kill resumes; removed when the batch is done.
    """

    def __init__(self, protocol: ProtocolConfig | None = None, progress: Log | None = None, journal: Path | None = None) -> None:
        self.protocol = protocol or ProtocolConfig()
        self._progress = progress
        self._sentinel = sentinel_model() if self.protocol.sentinel_every > 0 else None
        self._journal = journal

    def measure(self, onnx_bytes: bytes) -> Measurement:
        """Time one model."""
        return self.measure_many([onnx_bytes])[0]

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        """Time several models, interleaved."""
        if self._journal is None:
            return measure_models(list(models), self.protocol, self._sentinel, self._progress)
        journal = SessionJournal(self._journal, to_dict(self.protocol), self._progress)
        journal.open()
        results = measure_models(list(models), self.protocol, self._sentinel, self._progress, journal=journal)
        journal.discard()
        return results

    def device_info(self) -> dict[str, Any]:
        """This machine."""
        return device_info(self.protocol)


class RemoteRunner:
    """Ships models to a ``haq device serve`` agent, which times them on its own machine."""

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        protocol: ProtocolConfig | None = None,
        tls_ca: str | None = None,
    ) -> None:
        self.protocol = protocol or ProtocolConfig()
        self._client = DeviceClient(host, port, token, timeout, tls_ca)
        self._sentinel = sentinel_model() if self.protocol.sentinel_every > 0 else None

    @property
    def address(self) -> str:
        """``remote://host:port``."""
        return self._client.address

    def measure(self, onnx_bytes: bytes) -> Measurement:
        """Time one model on the device."""
        return self.measure_many([onnx_bytes])[0]

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        """Time several models on the device, interleaved there."""
        return self._client.measure(list(models), self.protocol, self._sentinel)

    def device_info(self) -> dict[str, Any]:
        """The device's own description (asked over the network)."""
        return self._client.ping()


def make_runner(
    spec: str,
    token: str | None = None,
    protocol: ProtocolConfig | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Log | None = None,
    tls_ca: str | None = None,
) -> LocalRunner | RemoteRunner:
    """``"local"`` or ``"remote://HOST:PORT"`` (the latter needs the agent's token, and
    ``tls_ca`` when the agent serves TLS)."""
    if spec == "local":
        return LocalRunner(protocol, progress)
    if not spec.startswith(REMOTE_PREFIX):
        raise ConfigError(f"device '{spec}' is not understood; use 'local' or 'remote://HOST:PORT'")
    host, port = parse_remote(spec)
    if not token:
        raise ConfigError(f"device {spec} needs the agent's token (--token or ${TOKEN_ENV})")
    return RemoteRunner(host, port, token, timeout, protocol, tls_ca)


def parse_remote(spec: str) -> tuple[str, int]:
    """``remote://HOST:PORT`` -> (host, port); IPv6 hosts go in brackets."""
    if not spec.startswith(REMOTE_PREFIX):
        raise ConfigError(f"device '{spec}' is not a remote://HOST:PORT address (e.g. remote://192.168.1.20:8765)")
    rest = spec[len(REMOTE_PREFIX) :]
    host, sep, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"device '{spec}' needs a host and a port in 1..65535, e.g. remote://192.168.1.20:8765")
    return host, int(port_text)
