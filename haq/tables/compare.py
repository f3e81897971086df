"""What a policy costs on every shipped device: the price of deploying a policy tuned elsewhere.

HAQ's point is that a policy specialized for one device is slow on another. To show it, a
policy is costed on each device table as that device would run it: a layer whose (w, a) the
device does not run is *promoted* to the narrowest pair it does run with at least those widths
(a 4-bit layer runs in 8-bit containers on an int8 CPU, not in float), and reported as
promoted. Narrowest, not cheapest alone: on graph-aware tables a layer switched to float
adds precision-boundary costs that the layer's own cost does not show. A layer
the table cannot cost at all, or with no pair that wide, leaves the device without a number
and a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from haq.core.config import to_dict
from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant import LayerInfo, QuantPolicy
from haq.tables.table import CostTable

UNIFORM_BITS = 8


@dataclass(frozen=True)
class DeviceCost:
    """One policy on one device.

    latency_ms / energy_mj: the policy's cost (``None`` when unavailable; energy only where the
        table has it). uniform_latency_ms: the same network at uniform 8-bit on this device,
        for scale. promoted: layers run at wider bits than the policy asks. note: why a number
        is missing.
    """

    table: str
    latency_ms: float | None
    energy_mj: float | None
    uniform_latency_ms: float | None
    promoted: tuple[str, ...] = ()
    note: str = ""

    @property
    def speedup_vs_uniform(self) -> float | None:
        """Uniform 8-bit latency / this policy's latency on the same device."""
        if self.latency_ms is None or self.uniform_latency_ms is None or self.latency_ms <= 0:
            return None
        return self.uniform_latency_ms / self.latency_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return to_dict(self)


def cost_on_devices(layers: Sequence[LayerInfo], policy: QuantPolicy, tables: Sequence[CostTable]) -> list[DeviceCost]:
    """``policy``'s cost on each of ``tables`` (e.g. ``latency_tables.load_all()``), in that order."""
    policy.check_layers(layers)
    return [cost_on_device(layers, policy, t) for t in tables]


def cost_on_device(layers: Sequence[LayerInfo], policy: QuantPolicy, table: CostTable) -> DeviceCost:
    """``policy`` on one device, promoting bit widths the device does not run (see module doc)."""
    try:
        net = table.compile(layers)
    except TableError as exc:
        return DeviceCost(table.name, None, None, None, note=str(exc).split("; add it with")[0])
    costs = [net.layer_costs(i, "latency") for i in range(len(layers))]
    requested = [(policy[layer.name].w_bits, policy[layer.name].a_bits) for layer in layers]
    deployed = deploy_bits(requested, costs)
    uniform = deploy_bits([(UNIFORM_BITS, UNIFORM_BITS)] * len(layers), costs)
    uniform_ms = net.bits_cost(uniform, "latency") if _complete(uniform) else None
    missing = [i for i, p in enumerate(deployed) if p is None]
    if missing:
        i = missing[0]
        return DeviceCost(
            table.name,
            None,
            None,
            uniform_ms,
            note=f"layer '{layers[i].name}' at w{requested[i][0]}/a{requested[i][1]} "
            f"has no pair at least that wide on {table.name}",
        )
    bits = [p for p in deployed if p is not None]
    promoted = tuple(layer.name for layer, r, d in zip(layers, requested, bits) if r != d)
    energy = net.bits_cost(bits, "energy") if "energy" in table.metrics else None
    return DeviceCost(table.name, net.bits_cost(bits, "latency"), energy, uniform_ms, promoted)


def _complete(bits: Sequence[BitPair | None]) -> bool:
    return all(p is not None for p in bits)


def deploy_bits(requested: Sequence[BitPair], costs: Sequence[Mapping[BitPair, float]]) -> list[BitPair | None]:
    """Per layer, the pair the device runs for ``requested`` (see :func:`promote_pair`)."""
    return [promote_pair(r, c) for r, c in zip(requested, costs)]


def promote_pair(requested: BitPair, costs: Mapping[BitPair, float]) -> BitPair | None:
    """``requested`` if the device runs it, else the narrowest pair (fewest bits in all, then
    cheapest) with both widths at least as wide — float (32) is wider than any integer width —
    else ``None``."""
    if requested in costs:
        return requested
    wider = [p for p in costs if p[0] >= requested[0] and p[1] >= requested[1]]
    return min(wider, key=lambda p: (p[0] + p[1], costs[p], p)) if wider else None
