"""Device cost tables: loading, saving and the query API the search uses.

The file format lives in :mod:`haq.tables.schema`, its validation in :mod:`haq.tables.validation`. A :class:`CostTable`
answers "what does this layer cost at (w, a) on the device" and "what does this network cost
under this policy"; the latter is compiled once per network (:mod:`haq.tables.network`) so
that the RL environment can call it every step.

Batch: a table is built at one batch size (``meta.batch``). Layer signatures from
:func:`haq.quant.discover_layers` carry batch 1 and are looked up at the table's batch (the cost
of one batch of ``meta.batch`` inferences); any other mismatch is an error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from haq.core.errors import TableError
from haq.core.fileio import atomic_write_text
from haq.core.jsonio import read_text
from haq.core.types import BitPair
from haq.quant.discovery import LayerInfo, LayerSignature
from haq.quant.policy import QuantPolicy
from haq.tables.network import Boundary, NetworkCosts, describe_pairs
from haq.tables.plan import Plan
from haq.tables.schema import (
    LEGACY_MEASURED_WEIGHTS,
    UNSIGNED_WEIGHTS,
    Correction,
    Entry,
    GraphExtras,
    TableData,
    Transition,
    dumps,
    kernel_share,
    network_family,
    network_fingerprint,
    op_kind,
)
from haq.tables.validation import loads, parse


class CostTable:
    """A validated device cost table with fast per-layer and per-policy queries."""

    def __init__(self, data: TableData, name: str, path: Path | None = None) -> None:
        self.data = data
        self.name = name
        self.path = path
        self.meta: Mapping[str, Any] = data.meta
        self.metrics: tuple[str, ...] = data.metrics
        self.batch: int = data.batch
        self._index: dict[str, dict[BitPair, Entry]] = {}
        for e in data.entries:
            self._index.setdefault(e.key, {})[(e.w_bits, e.a_bits)] = e
        self._compiled: dict[tuple[LayerInfo, ...], NetworkCosts] = {}
        self._last: tuple[tuple[LayerInfo, ...], NetworkCosts] | None = None

    @classmethod
    def from_dict(cls, raw: Any, name: str, source: str = "table") -> CostTable:
        """Validate a decoded table (e.g. one a builder assembled in memory)."""
        return cls(parse(raw, source), name)

    @property
    def device(self) -> str:
        """The device name recorded in the metadata."""
        return str(self.meta["device"]["name"])

    @property
    def build_device(self) -> str:
        """What ``haq tables build --device`` takes to extend this table: ``cpu`` for a table
        measured with onnxruntime here (its device name is the CPU's, not a build option),
        ``remote://HOST:PORT`` for one a device agent timed, else the device name."""
        if not str(self.meta["runtime"]["name"]).startswith("onnxruntime"):
            return self.device
        remote = bool((self.meta.get("machine") or {}).get("remote")) or "device agent" in self.meta["device"]["description"]
        return "remote://HOST:PORT" if remote else "cpu"

    @property
    def weight_container(self) -> str | None:
        """How this table's 8-bit layers stored their weights when timed (``meta.protocol.weights``),
        None for an analytical one: an exported model is priced right only when it stores them the
        same way. A table measured before the field existed timed int8, unless built in the day
        between the export's uint8 default and the field, whose protocol text says uint8."""
        if not str(self.meta["runtime"]["name"]).startswith("onnxruntime"):
            return None
        protocol = self.meta["protocol"]
        if "weights" in protocol:
            return str(protocol["weights"])
        return UNSIGNED_WEIGHTS if "uint8 weights" in str(protocol.get("precisions", "")) else LEGACY_MEASURED_WEIGHTS

    @property
    def export_weights(self) -> str:
        """The container to export models this table prices with: the one it timed, else (an
        analytical table, which no container changes) the export's default, uint8."""
        return self.weight_container or UNSIGNED_WEIGHTS

    @property
    def signatures(self) -> Mapping[str, LayerSignature]:
        """Every layer signature the table holds, by key."""
        return self.data.signatures

    def entries(self) -> Iterator[Entry]:
        """All entries, in file order."""
        return iter(self.data.entries)

    def sources(self) -> tuple[str, ...]:
        """The distinct ``source`` kinds of the entries (measured / analytical / emulated)."""
        return tuple(sorted({e.source for e in self.data.entries}))

    def __contains__(self, sig: object) -> bool:
        return isinstance(sig, LayerSignature) and self._key(sig, strict=False) in self._index

    def supported_bits(self, sig: LayerSignature) -> list[BitPair]:
        """The (w, a) pairs the device really runs for this layer (32 = float), sorted."""
        return sorted(self._entries_of(sig))

    def entry(self, sig: LayerSignature, w_bits: int, a_bits: int) -> Entry:
        """The full table entry (statistics, source, kernel) of one layer at (w, a)."""
        entries = self._entries_of(sig)
        e = entries.get((w_bits, a_bits))
        if e is None:
            runs = describe_pairs(sorted(entries))
            raise TableError(f"table {self.name}: layer {self._key(sig)} has no cost at w{w_bits}/a{a_bits}; it runs {runs}")
        return e

    def layer_cost(self, sig: LayerSignature, w_bits: int, a_bits: int, metric: str = "latency") -> float:
        """Cost of one layer alone at (w, a), in ms (latency) or mJ (energy)."""
        self._check_metric(metric)
        return self.entry(sig, w_bits, a_bits).cost(metric)

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        """Cost of a network under ``policy``: per-layer costs plus, where the table has them, the
        device's per-layer terms and precision-boundary costs (any network; those of its family
        where the table has them), then the network's fitted correction (only a network measured
        whole)."""
        return self.compile(layers).policy_cost(policy, metric)

    def check_covers(self, layers: Sequence[LayerInfo]) -> None:
        """Raise :class:`TableError` naming the first layer this table cannot cost."""
        for layer in layers:
            key = self._key(layer.signature)
            if key not in self._index:
                raise TableError(
                    f"table {self.name} cannot cost layer '{layer.name}' (signature {key}); add it with "
                    f"`haq tables build --model <your model> [--dataset D | --input-size N | --input-shape C,H,W] "
                    f"--batch {self.batch} --device {self.build_device} --out my-table.json`, then pass --device my-table.json"
                )

    def cost_range(self, layers: Sequence[LayerInfo], metric: str = "latency") -> tuple[float, float]:
        """Cheapest and dearest achievable network cost over the supported bits."""
        return self.compile(layers).cost_range(metric)

    def layer_costs_in(self, layers: Sequence[LayerInfo], metric: str = "latency") -> list[Mapping[BitPair, float]]:
        """Each layer's ``{(w, a): cost}`` inside ``layers``: its entry with the fitted per-layer terms
        and call-overhead share the table applies there, boundaries not included."""
        net = self.compile(layers)
        return [net.layer_costs(i, metric) for i in range(len(layers))]

    def plan(
        self, layers: Sequence[LayerInfo], allowed: Sequence[Sequence[BitPair]], metric: str = "latency", dearest: bool = False
    ) -> Plan:
        """The cheapest (``dearest``: dearest) ways to finish ``layers`` from any layer and pair of
        ``allowed``, boundary costs included (:meth:`NetworkCosts.plan`)."""
        return self.compile(layers).plan(allowed, metric, dearest)

    def compile(self, layers: Sequence[LayerInfo]) -> NetworkCosts:
        """Precompiled costs of ``layers`` (cached per network; the last one is found fastest)."""
        frozen = tuple(layers)
        last = self._last
        if last is not None and last[0] == frozen:  # element identity makes this a C-speed check
            return last[1]
        net = self._compiled.get(frozen)
        if net is None:
            net = self._build_network(frozen)
            self._compiled[frozen] = net
        self._last = (frozen, net)
        return net

    def with_graph(self, graph: GraphExtras) -> CostTable:
        """The same table with other graph-aware extras (validated), e.g. after fitting them."""
        return self._validated(replace(self.data, graph=graph))

    def with_entries(self, entries: Sequence[Entry]) -> CostTable:
        """The same table with other entries (validated), e.g. after timing them again."""
        return self._validated(replace(self.data, entries=tuple(entries)))

    def _validated(self, data: TableData) -> CostTable:
        """``data`` as a table of this name and path, through the same validation as a file."""
        return CostTable(parse(data.to_dict(), str(self.path or self.name)), self.name, self.path)

    def save(self, path: str | Path) -> None:
        """Write atomically: a temporary file in the same directory renamed over ``path``."""
        save_table(self.data, Path(path))

    def _build_network(self, layers: tuple[LayerInfo, ...]) -> NetworkCosts:
        if not layers:
            raise TableError("cannot cost a network with no layers")
        self.check_covers(layers)
        keys = [self._key(layer.signature) for layer in layers]
        per_layer = {m: [{p: e.cost(m) for p, e in self._index[k].items()} for k in keys] for m in self.metrics}
        fp = network_fingerprint(layers, self.batch)
        graph = self.data.graph.for_network(network_family(layers), fp)
        boundaries: list[Boundary] = []
        if graph.transitions or graph.rules:
            by_shape: dict[tuple[int, ...], dict[tuple[BitPair, BitPair], Transition]] = {}
            for t in graph.transitions:
                by_shape.setdefault(t.shape, {})[(t.src, t.dst)] = t
            for i in range(1, len(layers)):
                s = layers[i].signature.with_batch(self.batch)
                shape = (s.batch, s.in_channels, s.in_h, s.in_w)
                pool = layers[i].pool_input * s.batch // layers[i].signature.batch
                boundaries.append(Boundary(i, s.input_elems, by_shape.get(shape, {}), op_kind(s), pool))
        for t in graph.layer_terms:  # per-device: every network gets them, measured or not
            sigs = [layer.signature.with_batch(self.batch) for layer in layers]
            per_layer[t.metric] = [
                {p: v + (t.cost(s.input_elems, s.output_elems) if t.applies(p, s) else 0.0) for p, v in d.items()}
                for d, s in zip(per_layer[t.metric], sigs)
            ]
        ov = graph.run_overhead
        if ov is not None:  # entries without the call overhead each paid; the network pays it once (on layer 0)
            lat = [
                {p: v - ov.latency_ms * kernel_share(self._index[k][p]) for p, v in d.items()}
                for d, k in zip(per_layer[ov.metric], keys)
            ]
            lat[0] = {p: v + ov.latency_ms for p, v in lat[0].items()}
            per_layer[ov.metric] = lat
        corrections: dict[str, Correction] = {c.metric: c for c in graph.corrections if c.fingerprint == fp}
        for metric, c in corrections.items():  # folded into the layers: policy_cost and cost_range see it alike
            per_layer[metric] = [
                {p: v + (c.per_int8_layer if p[1] == 8 else 0.0) for p, v in d.items()} for d in per_layer[metric]
            ]
        rules = {(r.src, r.dst, r.op, r.through): r for r in graph.rules}
        return NetworkCosts(self.name, layers, per_layer, boundaries, rules, corrections)

    def _key(self, sig: LayerSignature, strict: bool = True) -> str:
        if sig.batch == self.batch:
            return sig.key()
        if sig.batch == 1:
            return sig.with_batch(self.batch).key()
        if strict:
            raise TableError(
                f"table {self.name} is built at batch {self.batch}; a layer at batch {sig.batch} cannot be costed with it"
            )
        return ""

    def _entries_of(self, sig: LayerSignature) -> dict[BitPair, Entry]:
        key = self._key(sig)
        entries = self._index.get(key)
        if entries is None:
            raise TableError(
                f"table {self.name} has no entry for layer signature {key}; "
                f"add it with `haq tables build --device {self.build_device}`"
            )
        return entries

    def _check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise TableError(f"table {self.name} has no metric '{metric}'; it has {', '.join(self.metrics)}")


def load_table(path: str | Path, name: str | None = None) -> CostTable:
    """Read and validate a table file (its name defaults to the file stem); only a regular UTF-8
    file under the size cap is read, so ``--device /dev/zero`` is one error, not a hang."""
    p = Path(path)
    return CostTable(loads(read_text(p, "cost table", error=TableError), str(p)), name or p.stem, p)


def save_table(data: TableData, path: Path) -> None:
    """Atomic write so a crash mid-build never leaves a truncated table behind."""
    atomic_write_text(path, dumps(data))
