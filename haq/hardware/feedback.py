"""Hardware feedback: the measured latency of the whole model under a policy, as a cost source.

A per-layer table cannot see everything a real runtime does between layers (Q/DQ pairs and
layout transposes at precision changes, fusions, kernels the optimizer swaps), so HAQ's
"hardware feedback" times the real thing: export the whole network under the policy, run it
through a :class:`~haq.hardware.device.runner.Runner` (this machine or a device agent) with the
measurement protocol, and report its latency (a floor: :mod:`haq.hardware.device.measurement`).
:class:`MeasuredCost` has the same ``policy_cost(layers, policy, metric)`` as
:class:`~haq.tables.table.CostTable`, so the search can use it for episode-end rewards while a
table stays the fast prior inside an episode.

Each policy is measured once: results are cached in memory and, optionally, in a JSON file
written atomically after every new measurement, so a resumed search does not re-measure. The
file records what the numbers depend on (model, layers, device, runtime, protocol, exporter)
and is refused when any of that differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from haq.core import jsonio, validate
from haq.core.config import to_dict
from haq.core.errors import ConfigError, HaqError
from haq.core.fileio import atomic_write_text
from haq.core.types import Log, quiet
from haq.export import export_policy
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.runner import Runner
from haq.hardware.measured import container_options
from haq.quant import LayerInfo, QuantPolicy
from haq.tables.schema import UNSIGNED_WEIGHTS, WEIGHT_CONTAINERS
from haq.workload import Workload

FEEDBACK_CACHE = "measured_latency.json"
"""Where a run directory keeps hardware-feedback measurements, so a resumed run does not re-measure."""
CACHE_FORMAT = "haq-measured-cost"
CACHE_VERSION = 1
_DEVICE_KEYS = ("cpu", "machine", "onnxruntime", "threads")


class Exporter(Protocol):
    """Turns a workload and a policy into ONNX bytes that run that policy."""

    def __call__(self, workload: Workload, policy: QuantPolicy) -> bytes:
        """ONNX model bytes of the whole network under ``policy``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Settings that change the exported graph (recorded in the cache file)."""
        ...


@dataclass(frozen=True)
class QDQExporter:
    """:func:`haq.export.export_policy`, calibrated on the first ``calibration_size`` training images.

    emulated: export bit widths the CPU cannot run on 8-bit containers instead of refusing.
    weights: the container of 8-bit weights (the table's, whose budget the measurements stand in for).
    """

    calibration_size: int = 64
    emulated: bool = False
    weights: str = UNSIGNED_WEIGHTS

    def __post_init__(self) -> None:
        validate.count("calibration_size", self.calibration_size, 1, 100_000)
        validate.choice("weights", self.weights, WEIGHT_CONTAINERS)

    def __call__(self, workload: Workload, policy: QuantPolicy) -> bytes:
        """Export (and verify against onnxruntime's optimized graph) the whole model."""
        x, _ = workload.data.subset("train", self.calibration_size)
        options = container_options(self.weights, self.emulated)
        return export_policy(workload.model, workload.layers, policy, workload.data.input_shape, x, options).onnx_bytes

    def to_dict(self) -> dict[str, Any]:
        """Settings recorded in the cache (the default uint8 container unrecorded, as in caches
        written before the choice, which timed it)."""
        settings = to_dict(self)
        if self.weights == UNSIGNED_WEIGHTS:
            del settings["weights"]
        return {"exporter": "qdq", **settings}


class MeasuredCost:
    """Measured whole-model latency per policy, cached; a drop-in for ``CostTable.policy_cost``."""

    metrics: tuple[str, ...] = ("latency",)

    def __init__(
        self,
        workload: Workload,
        runner: Runner,
        exporter: Exporter | None = None,
        cache_path: str | Path | None = None,
        log: Log | None = None,
    ) -> None:
        self.workload = workload
        self.runner = runner
        self.exporter: Exporter = exporter or QDQExporter()
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self._log = log or quiet
        info = runner.device_info()
        self.identity: dict[str, Any] = {
            "model": to_dict(workload.config),
            "layers": workload.layer_names,
            "device": {k: info.get(k) for k in _DEVICE_KEYS},
            "protocol": to_dict(runner.protocol),
            "exporter": self.exporter.to_dict(),
        }
        self.name = f"measured:{info.get('cpu', 'device')}"
        self._cache: dict[str, Measurement] = {}
        if self.cache_path is not None and self.cache_path.exists():
            self._cache = self._load(self.cache_path)

    def __len__(self) -> int:
        """Policies measured so far (including those read from the cache file)."""
        return len(self._cache)

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        """Measured latency (ms, the protocol's floor) of the whole model under ``policy``."""
        if metric not in self.metrics:
            raise ConfigError(f"measured cost has only latency; metric '{metric}' needs a cost table that stores it")
        self._check_layers(layers)
        return self.measurement(policy).latency_ms

    def measurement(self, policy: QuantPolicy) -> Measurement:
        """The full measurement (raw samples, noise, kernels) of ``policy``, measured once."""
        return self.measure_many([policy])[0]

    def measure_many(self, policies: Sequence[QuantPolicy]) -> list[Measurement]:
        """Measure all uncached policies in one interleaved batch (drift hits all alike)."""
        keys = [self._key(p) for p in policies]
        todo: dict[str, QuantPolicy] = {}
        for key, policy in zip(keys, policies):
            if key not in self._cache and key not in todo:
                todo[key] = policy
        if todo:
            self._log(f"hardware feedback: exporting {len(todo)} polic{'y' if len(todo) == 1 else 'ies'}")
            models = [self.exporter(self.workload, p) for p in todo.values()]
            self._log(f"hardware feedback: measuring on {self.name}")
            for key, m in zip(todo, self.runner.measure_many(models)):
                self._cache[key] = m
                self._log(f"hardware feedback: {m.latency_ms:.4f} ms (noise {m.noise:.3f}) for {key}")
            self._save()
        return [self._cache[k] for k in keys]

    def _key(self, policy: QuantPolicy) -> str:
        policy.check_layers(self.workload.layers)
        return policy_key(self.workload.layers, policy)

    def _check_layers(self, layers: Sequence[LayerInfo]) -> None:
        names = [layer.name for layer in layers]
        if names != self.workload.layer_names:
            raise ConfigError(
                f"measured cost is bound to {self.workload.config.model} ({len(self.workload.layers)} layers); "
                f"got a layer list of {len(names)} layers starting {names[:1]}"
            )

    def _load(self, path: Path) -> dict[str, Measurement]:
        where = f"measured-cost cache {path}"
        try:
            raw = jsonio.read_json(path, "measured-cost cache", error=ConfigError)
        except ConfigError as exc:
            raise ConfigError(f"{where} is unreadable ({exc}); delete it to start afresh") from None
        if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or raw.get("version") != CACHE_VERSION:
            raise ConfigError(f"{where} is not a version-{CACHE_VERSION} {CACHE_FORMAT} file")
        for field, value in self.identity.items():
            stored = (raw.get("identity") or {}).get(field)
            if stored != json.loads(json.dumps(value)):
                raise ConfigError(f"{where} was measured with a different {field} ({stored!r}); use another cache file")
        entries = raw.get("entries")
        if not isinstance(entries, dict):
            raise ConfigError(f"{where} has no 'entries' object")
        try:
            return {str(k): Measurement.from_dict(v) for k, v in entries.items()}
        except HaqError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def _save(self) -> None:
        if self.cache_path is None:
            return
        record = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "identity": self.identity,
            "entries": {k: m.to_dict() for k, m in self._cache.items()},
        }
        atomic_write_text(self.cache_path, json.dumps(record))


def policy_key(layers: Sequence[LayerInfo], policy: QuantPolicy) -> str:
    """Canonical key of a policy over ``layers``: ``name:w/a`` in execution order."""
    return ";".join(f"{layer.name}:{policy[layer.name].w_bits}/{policy[layer.name].a_bits}" for layer in layers)
