"""What the layers above need from a cost table, as protocols: a concrete table
(:class:`~haq.tables.table.CostTable`), an analytical one or a hardware-in-the-loop measurer
all fit, and the evaluation layer receives one without knowing which."""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from haq.core.types import BitPair
from haq.quant import LayerInfo, LayerSignature, QuantPolicy
from haq.tables.plan import Plan


class CostSource(Protocol):
    """Anything that prices a whole policy: a device table or a hardware-in-the-loop measurer."""

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float: ...


class DeviceTable(CostSource, Protocol):
    """The part of ``haq.hardware``'s CostTable the search relies on (see docs/architecture.md)."""

    name: str
    meta: Mapping[str, Any]
    metrics: tuple[str, ...]

    @property
    def weight_container(self) -> str | None:
        """The container of 8-bit weights its costs were timed with (``uint8`` / ``int8``), None
        when no container changes them (an analytical table)."""
        ...

    @property
    def export_weights(self) -> str:
        """The container of 8-bit weights a model it prices is exported with (``uint8`` / ``int8``)."""
        ...

    def supported_bits(self, sig: LayerSignature) -> list[BitPair]: ...

    def layer_cost(self, sig: LayerSignature, w_bits: int, a_bits: int, metric: str = "latency") -> float: ...

    def check_covers(self, layers: Sequence[LayerInfo]) -> None: ...


@runtime_checkable
class ChainPlanner(Protocol):
    """A table that prices a network as its layers in context plus a cost at each boundary
    between them (a measured CPU table's precision changes): it says what each layer costs inside
    the network and finds the network's cheapest or dearest completions itself
    (:func:`haq.tables.plan.chain_plan`)."""

    def layer_costs_in(self, layers: Sequence[LayerInfo], metric: str = "latency") -> list[Mapping[BitPair, float]]: ...

    def plan(
        self, layers: Sequence[LayerInfo], allowed: Sequence[Sequence[BitPair]], metric: str = "latency", dearest: bool = False
    ) -> Plan: ...
