"""The backend a table build's device names: one place that turns ``bitfusion``, ``cpu`` or
``remote://HOST:PORT`` into something that prices layers, for the command line, job files and the
service alike (each resolves names its own way first and says which field it read)."""

from __future__ import annotations

from haq.core.errors import ConfigError
from haq.core.types import Log
from haq.hardware.build import LOCAL_DEVICES, DeviceBackend
from haq.hardware.build_analytical import ANALYTICAL_DEVICES, AnalyticalBackend
from haq.hardware.device.runner import REMOTE_PREFIX, RemoteAccess, make_runner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.measured import MeasuredBackend
from haq.tables.schema import UNSIGNED_WEIGHTS


def device_backend(
    device: str,
    protocol: ProtocolConfig,
    log: Log | None,
    access: RemoteAccess | None = None,
    field: str = "--device",
    weights: str = UNSIGNED_WEIGHTS,
) -> DeviceBackend:
    """An analytical model, this CPU timed with ``protocol``, or a device agent at
    ``remote://HOST:PORT`` reached with ``access`` (both timing 8-bit weights stored as
    ``weights``); anything else is a :class:`ConfigError` naming ``field`` and the devices that are valid."""
    if device in ANALYTICAL_DEVICES:
        return AnalyticalBackend(device)
    if device == "cpu":
        return MeasuredBackend(protocol, log, weights=weights)
    if device.startswith(REMOTE_PREFIX):
        access = access or RemoteAccess()
        runner = make_runner(device, access.token, protocol, tls_ca=access.tls_ca)
        return MeasuredBackend(protocol, log, runner, weights=weights)
    raise ConfigError(f"{field}: unknown device {device!r}; choose {', '.join(LOCAL_DEVICES)} or remote://HOST:PORT")
