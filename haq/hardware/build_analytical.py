"""Backends that price layers with the analytical accelerator models of :mod:`haq.hardware.analytical`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from haq import __version__
from haq.core.errors import ConfigError
from haq.hardware.analytical import (
    BISMO_CLOUD,
    BISMO_EDGE,
    BismoConfig,
    BitFusionConfig,
    Constant,
    Estimate,
    bismo_cost,
    bitfusion_cost,
)
from haq.quant.discovery import LayerSignature
from haq.quant.primitives import MAX_BITS, MIN_BITS
from haq.tables.schema import Entry


@dataclass(frozen=True)
class AnalyticalDevice:
    """An analytical device: its description, metrics, constants and per-layer cost function."""

    name: str
    description: str
    metrics: tuple[str, ...]
    constants: Mapping[str, Constant]
    model: str
    cost: Callable[[LayerSignature, int, int], Estimate]


def _bismo(cfg: BismoConfig) -> AnalyticalDevice:
    return AnalyticalDevice(
        name=cfg.name,
        description=cfg.description,
        metrics=("latency",),
        constants=cfg.constants(),
        model=(
            "bismo roofline: max(GEMMs * ceil(M/Dm) * ceil(K/Dk) * ceil(N/Dn) * w * a compute cycles, "
            "weight + activation bits read with tile-memory reuse / port, outputs * a written / port); "
            "depthwise packed block-diagonally, no cross-channel reuse"
        ),
        cost=lambda s, w, a: bismo_cost(s, w, a, cfg),
    )


def _bitfusion(cfg: BitFusionConfig) -> AnalyticalDevice:
    return AnalyticalDevice(
        name="bitfusion",
        description="Bit Fusion bit-flexible accelerator, 16x32 fusion units at 500 MHz, 45 nm (ISCA 2018 edge design)",
        metrics=("latency", "energy"),
        constants=cfg.constants(),
        model="bitfusion: MACs / (units * pf) cycles vs DRAM bits / interface width; energy = core + memory",
        cost=lambda s, w, a: bitfusion_cost(s, w, a, cfg),
    )


ANALYTICAL_DEVICES: Mapping[str, AnalyticalDevice] = {
    d.name: d for d in (_bitfusion(BitFusionConfig()), _bismo(BISMO_EDGE), _bismo(BISMO_CLOUD))
}


class AnalyticalBackend:
    """Prices every (w, a) in 1..8 x 1..8 with an analytical model; float is not offered."""

    def __init__(self, device: str) -> None:
        if device not in ANALYTICAL_DEVICES:
            raise ConfigError(f"unknown analytical device '{device}'; choose one of {', '.join(ANALYTICAL_DEVICES)}")
        self.device = ANALYTICAL_DEVICES[device]

    def metadata(self, batch: int) -> dict[str, Any]:
        """Metadata for a table of this device (see :mod:`haq.tables.schema`)."""
        d = self.device
        return {
            "device": {"name": d.name, "description": d.description},
            "runtime": {"name": f"analytical:{d.name}", "version": f"haq {__version__}"},
            "threads": None,
            "protocol": {
                "kind": "analytical",
                "model": d.model,
                "bits": f"w, a in {MIN_BITS}..{MAX_BITS}; float (32) is not run by this accelerator",
                "reference": "haq.hardware.analytical",
            },
            "units": {"latency": "ms", "energy": "mJ"},
            "metrics": list(d.metrics),
            "constants": {k: c.to_dict() for k, c in d.constants.items()},
        }

    def entries(self, sig: LayerSignature) -> list[Entry]:
        """One analytical entry per (w, a) in 1..8 x 1..8."""
        out = []
        for w in range(MIN_BITS, MAX_BITS + 1):
            for a in range(MIN_BITS, MAX_BITS + 1):
                est = self.device.cost(sig, w, a)
                out.append(
                    Entry(
                        key=sig.key(),
                        w_bits=w,
                        a_bits=a,
                        latency_ms=est.latency_ms,
                        latency_iqr_ms=0.0,
                        samples=0,
                        source="analytical",
                        kernel=est.kernel,
                        energy_mj=est.energy_mj if "energy" in self.device.metrics else None,
                    )
                )
        return out
