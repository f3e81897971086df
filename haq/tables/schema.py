"""The device cost table file format (``haq.cost_table`` versions 1 to 10): its records and writing.

A table is one JSON object; every field below is checked on load (:mod:`haq.tables.validation`)
and a bad one is a :class:`~haq.core.errors.TableError` naming the file and the field::

    {
      "format": "haq.cost_table", "version": 1 | ... | 11,  # 11 iff graph.parts_call.layers,
                                                        # 10 iff graph.parts_call.by_kind,
                                                        # 9 iff graph.parts_call,
                                                        # 8 iff a network's terms are priced_by "parts",
                                                        # 7 iff graph.networks or a rule has "through",
                                                        # 6 iff graph.families,
                                                        # 5 iff a rule has an op,
                                                        # 4 iff a layer term has an op, 3 iff graph.layer_terms,
                                                        # else 2 iff meta.machine
      "meta": {
        "device":    {"name": "bitfusion", "description": "..."},
        "runtime":   {"name": "analytical:bitfusion", "version": "haq 0.1.0"},
        "threads":   1 | null,               # intra-op threads of a measured runtime
        "protocol":  {...},                   # how costs were obtained (free-form object; its
                                              # "weights", "uint8" | "int8", is checked: below)
        "units":     {"latency": "ms", "energy": "mJ"},   # fixed; anything else is rejected
        "metrics":   ["latency"] | ["latency", "energy"],
        "constants": {"freq": {"value": 5e8, "unit": "Hz", "source": "..."}, ...},
        "created":   "2026-11-22T01:30:00+00:00", "updated": "...",   # updated is optional
        "tool":      {"name": "haq", "version": "0.1.0"},
        "batch":     1,                       # every signature below has this batch
        "models":    ["resnet20", ...],       # optional: models the table was built for
        "machine":   {"identity": "16 hex", "probe_ms": 0.044 | null, ...}   # optional, version 2
      },
      "signatures": {"<LayerSignature.key()>": {<LayerSignature.to_dict()>}, ...},
      "entries": [
        {"key": "<signature key>", "w_bits": 4, "a_bits": 8,
         "latency_ms": 0.012, "latency_iqr_ms": 0.0, "samples": 0,
         "energy_mj": 0.0003,                 # required iff "energy" is a metric
         "source": "measured" | "analytical" | "emulated",
         "kernel": "what actually ran",
         "raw_ms": [...],                     # optional raw samples (measured)
         "extra": {...}},                     # optional, backend-specific, free-form
        ...],
      "graph": {                              # optional graph-aware extras (measured CPUs)
        "transitions": [{"shape": [n, c, h, w], "from": [w, a], "to": [w, a],
                         "latency_ms": ..., "energy_mj": ..., "source": ..., "kernel": ...}],
        "transition_rules": [{"from": [w, a], "to": [w, a], "latency_ms": fixed,
                              "latency_ms_per_elem": ..., "energy_mj": ...,
                              "energy_mj_per_elem": ..., "source": ...,
                              "op": "conv" | "conv1x1" | "dwconv" | "linear",   # op optional, version 5
                              "through": "maxpool"}],                           # optional, version 7
        "corrections": [{"fingerprint": "...", "network": "resnet20", "metric": "latency",
                         "scale": 1.05, "offset": 0.01, "fitted_on": 10,
                         "per_int8_layer": 0.002}],           # optional, default 0
        "layer_terms": [{"domain": "int8" | "float" | "weight-only", "metric": "latency",   # version 3
                         "fixed": 0.004, "per_in_elem": 1e-6, "per_out_elem": 2e-6,
                         "networks": ["resnet20", "vgg6"], "fitted_on": 48,
                         "op": "conv" | "conv1x1" | "dwconv" | "linear"}],     # op optional, version 4
        "run_overhead": {"metric": "latency", "latency_ms": 0.0027, "probe_ms": 0.0055},  # version 3
        "families": [{"family": "dense" | "depthwise",                                     # version 6
                      "transition_rules": [...], "layer_terms": [...], "run_overhead": {...}}],
        "networks": [{"fingerprint": "...", "network": "resnet20", "fitted_on": 12,        # version 7
                      "priced_by": "measurement" | "parts",                              # optional, version 8
                      "transition_rules": [...], "layer_terms": [...], "run_overhead": {...}}],
        "parts_call": {"latency_ms": 0.0039, "fitted_on": ["digits_mlp"], "measurements": 12,  # version 9
                       "by_kind": {"float": 0.0030, "int8": 0.0025, "weight-only": 0.0044, "node": 0.0037},  # version 10
                       "layers": "kernels", "latency_ms_per_output_byte": 4.7e-9}          # version 11
      }
    }

Semantics of the graph extras (used by ``CostTable.policy_cost``):

* A *boundary* lies between two layers that are consecutive in execution order. When their
  (w, a) pairs differ, the cost of the boundary is added: the ``transitions`` entry whose
  ``shape`` equals the consumer layer's input ``[batch, in_channels, in_h, in_w]`` and whose
  ``from`` / ``to`` are the producer's / consumer's (w, a); failing that, the
  ``transition_rules`` entry for that precision pair (``fixed + per_elem * elements``) whose
  ``op`` is the consumer layer's op kind (:func:`op_kind`; version 5), else the one without
  an ``op``; failing that, nothing. Keyed by the consumer because what a boundary inserts
  (a QuantizeLinear and, into a conv, an NCHW->NHWC reorder) is fused or not depending on
  the op that reads it. This prices quantize / dequantize and layout changes that only
  appear where precision changes. A rule with ``"through": "maxpool"`` (version 7) is added on
  top where the consumer reads a max-pool's output (:attr:`haq.quant.LayerInfo.pool_input`),
  per element entering the pool: onnxruntime moves a float -> int8 boundary's Quantize up
  through the pool and runs the pool in int8.
* A ``corrections`` entry applies to a network whose :func:`network_fingerprint` matches:
  ``cost = scale * (sum of layers + boundaries) + offset`` for its metric (``offset`` in the
  metric's unit). ``scale`` must be positive so the ranking of policies is kept. The optional
  ``per_int8_layer`` (>= 0, default 0; written by version 2 fits, superseded by
  ``layer_terms``) is added to the cost of every layer of that network
  run with 8-bit activations: the requantize work around the ops between layers (residual
  adds, pooling) that an int8 region of that particular graph pays and a single-layer
  measurement cannot see.
* ``layer_terms`` (version 3) are per-*device* terms, fitted once over several networks
  (:mod:`haq.hardware.graph_fit`), so they hold for a network that was never measured whole:
  every layer run in ``domain`` (``int8``: 8-bit activations, the QDQ domain;
  ``weight-only``: float activations with quantized weights; ``float``: fp32) costs
  ``fixed + per_in_elem * input elements + per_out_elem * output elements`` (at the
  table's batch) on top of its entry, for ``metric``. ``fixed`` may be
  negative (an entry measured in isolation can overstate the in-graph cost), the per-element
  terms are >= 0; ``networks`` names what they were fitted on and ``fitted_on`` counts the
  whole-model measurements. A term with an ``op`` (version 4) applies only to layers of that
  kind (:func:`op_kind`: ``conv1x1`` is a dense 1x1 conv, ``conv`` a dense one with a larger
  kernel), one without it to every layer of its domain; the terms that match a layer add up.
  At most one term per (domain, op, metric). A network's correction then applies on top of
  them, only to a network that was measured.
* ``run_overhead`` (version 3, optional) is the per-call cost every isolated single-layer
  entry holds a share of (its in-context cost is the isolated median x kernel share) and a
  network pays once. Each entry is priced ``entry latency - run_overhead.latency_ms x
  extra.kernel_share`` (share 1 where absent; every entry must stay > 0) and a network adds
  ``latency_ms`` once. It is fitted over networks with the other device terms, bounded by
  ``probe_ms`` (0 <= latency_ms <= probe_ms), the measured call time of a near-empty model.
  On small networks (tens of µs) it is most of the gap between layer sum and measurement.
* ``families`` (version 6, optional): device terms fitted on one family of networks only
  (:func:`network_family`: ``depthwise`` when a network has a depthwise conv, else ``dense``),
  at most one per family, each with the fields above (``run_overhead`` optional). A network of
  that family is priced with them *instead of* the top-level ``transition_rules``,
  ``layer_terms`` and ``run_overhead`` (fitted on every network); its correction, if any, was
  fitted on top of them. Why: MobileNet-like networks in a joint fit pull the shared terms
  away from what dense networks pay (:func:`haq.hardware.graph_fit.fit_set`).
* ``networks`` (version 7, optional): device terms fitted on one measured network's own
  configurations, matched by ``fingerprint`` like a correction; that network is priced with
  them instead of its family's terms and gets no correction. The fit makes them instead of a
  correction where the network has more distinct measured configurations than the terms have
  unknowns: the correction only rescales the family's prediction, while the boundary and layer
  costs of one graph (its ops between layers, where its pools sit) differ from the family's.
  ``priced_by`` (version 8, default ``measurement``) says what timed those configurations:
  the network run whole, or ``parts``: every node onnxruntime compiles for it, each timed alone
  (its layers' entries and the nodes between them before ``parts_call.layers``;
  :mod:`haq.hardware.parts`), so the network itself was never timed whole.
* ``parts_call`` (version 9, optional): the call overhead of an isolated model on the machine
  that measured the table, as a fit by parts found it: fitted on ``measurements`` whole-model
  measurements of the networks ``fitted_on``, each priced by parts beside its measurement. A
  later fit that prices a network by parts with no network measured whole beside it uses this
  instead of the overhead it can only time, which scored far worse (latency_tables/README.md).
  ``latency_ms`` is one overhead for every call; ``by_kind`` (version 10, optional) one per
  kind of isolated model (:data:`CALL_KINDS`). ``layers`` (version 11, default ``entries``) says
  what the parts priced layers by: their single-layer entries (versions 9 and 10), or ``kernels``:
  each layer's kernel as onnxruntime compiled it into the network, timed alone like the nodes
  between layers, with ``latency_ms_per_output_byte`` (optional, >= 0, default 0) the timed cost
  of each byte an isolated model hands back. An overhead is kept only for the parts it was fitted
  on, so a fit by kernels does not reuse one fitted on entries. It prices nothing itself.

``meta.machine`` (version 2) is the fingerprint of the machine that measured the table
(:class:`haq.hardware.device.machine.MachineFingerprint`: CPU vendor / family / model /
stepping, kernel-selecting flags, cores, caches, onnxruntime build, a timing probe), so loading
it on another machine can warn. It is checked here only for shape: an object with a string
``identity``, ``probe_ms`` a positive number or null, ``remote`` (optional) a boolean that is
true when a ``haq device serve`` agent, not the building host, did the timing; other fields
are the fingerprint's and are read by its owner. A table is written at the lowest version that
holds it, so analytical and older measured tables stay version 1 (or 2) and load as before.

Costs are per inference of one batch of ``meta.batch``; latency in milliseconds, energy in
millijoules. Bits are 1..8, or 32 for float. Zero or negative costs, NaN and infinities are
rejected: every pair a table lists is a pair the device runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from haq.core.types import BitPair
from haq.quant.discovery import LayerInfo, LayerSignature

TABLE_FORMAT = "haq.cost_table"
TABLE_VERSION = 11
"""The newest version this haq writes; :func:`table_version` picks the lowest one a table needs."""
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
WEIGHT_CONTAINERS = ("uint8", "int8")
"""How a measured table's single-layer models stored 8-bit weights (``meta.protocol.weights``), as
``haq export`` stores them (uint8 at zero point 128 by default, int8 with ``--int8-weights``):
onnxruntime runs the two through different kernels on x86, at different speeds. Part of the
free-form protocol record, so a haq that predates it still reads the table."""
UNSIGNED_WEIGHTS, SIGNED_WEIGHTS = WEIGHT_CONTAINERS
LEGACY_MEASURED_WEIGHTS = SIGNED_WEIGHTS
"""What a table measured with onnxruntime that records no ``meta.protocol.weights`` timed: int8,
as the export stored 8-bit weights until 2026-12-07 (a table built on that day says uint8 in its
``meta.protocol.precisions``; :attr:`haq.tables.table.CostTable.weight_container` reads it)."""
DOMAINS = ("float", "int8", "weight-only")
CALL_KINDS = (*DOMAINS, "node")
"""What an isolated model's call overhead is fitted per (``graph.parts_call.by_kind``): a layer
of each domain, and a node between layers."""
ENTRIES, KERNELS = "entries", "kernels"
PARTS_LAYERS = (ENTRIES, KERNELS)
"""What a fit by parts priced layers by (``graph.parts_call.layers``, version 11): the table's
single-layer entries, or each layer's compiled kernel timed alone."""
"""Layer kinds a device's layer terms distinguish (:func:`term_domain`)."""
OP_KINDS = ("conv", "conv1x1", "dwconv", "linear")
"""Op kinds a layer term may be restricted to (:func:`op_kind`)."""
THROUGH_KINDS = ("maxpool",)
"""What a boundary rule may price on the boundary's way to its consumer (``through``, version 7)."""
PRICED_BY = ("measurement", "parts")
"""What timed the configurations a network's own terms were fitted on (``priced_by``, version 8)."""
FAMILIES = ("dense", "depthwise")
"""Network families a device's fitted terms may differ by (:func:`network_family`)."""
UNITS: Mapping[str, str] = {"latency": "ms", "energy": "mJ"}
OPS = ("conv", "dwconv", "linear")

Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Entry:
    """Cost of one layer signature at one (w_bits, a_bits) on the table's device."""

    key: str
    w_bits: int
    a_bits: int
    latency_ms: float
    latency_iqr_ms: float
    samples: int
    source: str
    kernel: str
    energy_mj: float | None = None
    raw_ms: tuple[float, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def cost(self, metric: str) -> float:
        """The entry's cost for ``metric`` (the table guarantees it is present)."""
        value = self.latency_ms if metric == "latency" else self.energy_mj
        assert value is not None
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, optional fields only when set."""
        d: dict[str, Any] = {
            "key": self.key,
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "latency_ms": self.latency_ms,
            "latency_iqr_ms": self.latency_iqr_ms,
            "samples": self.samples,
        }
        if self.energy_mj is not None:
            d["energy_mj"] = self.energy_mj
        d["source"], d["kernel"] = self.source, self.kernel
        if self.raw_ms:
            d["raw_ms"] = list(self.raw_ms)
        if self.extra:
            d["extra"] = dict(self.extra)
        return d


@dataclass(frozen=True)
class Transition:
    """Measured cost of a precision change in front of a layer whose input has ``shape``."""

    shape: Shape
    src: BitPair
    dst: BitPair
    latency_ms: float
    energy_mj: float | None
    source: str
    kernel: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {
            "shape": list(self.shape),
            "from": list(self.src),
            "to": list(self.dst),
            "latency_ms": self.latency_ms,
        }
        if self.energy_mj is not None:
            d["energy_mj"] = self.energy_mj
        d["source"], d["kernel"] = self.source, self.kernel
        return d


@dataclass(frozen=True)
class TransitionRule:
    """Fallback boundary cost for a precision pair: ``fixed + per_elem * elements`` per metric."""

    src: BitPair
    dst: BitPair
    latency_ms: float
    latency_ms_per_elem: float
    energy_mj: float | None
    energy_mj_per_elem: float | None
    source: str
    op: str = ""
    """The consumer layer's :data:`OP_KINDS` kind this rule is for, or empty for any consumer."""
    through: str = ""
    """``maxpool`` (version 7): the extra cost when the boundary's tensor passes a max-pool in front
    of the consumer, per element entering the pool, on top of the boundary's own rule; else empty."""

    def cost(self, metric: str, elems: int) -> float:
        """Boundary cost for a tensor of ``elems`` elements."""
        if metric == "latency":
            return self.latency_ms + self.latency_ms_per_elem * elems
        assert self.energy_mj is not None and self.energy_mj_per_elem is not None
        return self.energy_mj + self.energy_mj_per_elem * elems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {
            "from": list(self.src),
            "to": list(self.dst),
            "latency_ms": self.latency_ms,
            "latency_ms_per_elem": self.latency_ms_per_elem,
        }
        if self.energy_mj is not None:
            d["energy_mj"], d["energy_mj_per_elem"] = self.energy_mj, self.energy_mj_per_elem
        d["source"] = self.source
        if self.op:
            d["op"] = self.op
        if self.through:
            d["through"] = self.through
        return d


@dataclass(frozen=True)
class Correction:
    """Per-network affine correction ``scale * raw + offset`` fitted on measured whole models."""

    fingerprint: str
    network: str
    metric: str
    scale: float
    offset: float
    fitted_on: int
    per_int8_layer: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``per_int8_layer`` only when set, so older tables round-trip unchanged)."""
        d: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "network": self.network,
            "metric": self.metric,
            "scale": self.scale,
            "offset": self.offset,
            "fitted_on": self.fitted_on,
        }
        if self.per_int8_layer:
            d["per_int8_layer"] = self.per_int8_layer
        return d


@dataclass(frozen=True)
class LayerTerm:
    """Per-device cost every layer run in ``domain`` (and of kind ``op``, where one is given)
    adds: ``fixed + per_in_elem * in + per_out_elem * out``."""

    domain: str
    metric: str
    fixed: float
    per_in_elem: float
    per_out_elem: float
    networks: tuple[str, ...]
    fitted_on: int
    op: str = ""
    """An :data:`OP_KINDS` kind, or empty for every op."""

    def applies(self, pair: BitPair, signature: LayerSignature) -> bool:
        """Whether the term prices this layer run at this pair."""
        return term_domain(pair) == self.domain and self.op in ("", op_kind(signature))

    def cost(self, in_elems: int, out_elems: int) -> float:
        """The term for one layer with these input / output element counts."""
        return self.fixed + self.per_in_elem * in_elems + self.per_out_elem * out_elems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "domain": self.domain,
            "metric": self.metric,
            "fixed": self.fixed,
            "per_in_elem": self.per_in_elem,
            "per_out_elem": self.per_out_elem,
            "networks": list(self.networks),
            "fitted_on": self.fitted_on,
            **({"op": self.op} if self.op else {}),
        }


@dataclass(frozen=True)
class RunOverhead:
    """Per-call cost an isolated single-layer entry holds and a network pays once (ms): fitted
    over networks, at most ``probe_ms``, the measured call time of a near-empty model."""

    metric: str
    latency_ms: float
    probe_ms: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"metric": self.metric, "latency_ms": self.latency_ms, "probe_ms": self.probe_ms}


@dataclass(frozen=True)
class PartsCall:
    """The call overhead of an isolated model (ms) a fit by parts found on ``measurements``
    whole-model measurements of the networks ``fitted_on`` (version 9): ``latency_ms`` for every
    call alike, ``by_kind`` one per kind in :data:`CALL_KINDS` order (version 10), ``layers`` what
    the parts priced layers by (:data:`PARTS_LAYERS`, version 11) and, for parts by kernels,
    ``per_byte_ms`` the cost of each byte of output an isolated model hands back."""

    latency_ms: float
    fitted_on: tuple[str, ...]
    measurements: int
    by_kind: tuple[float, ...] | None = None
    layers: str = ENTRIES
    per_byte_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.by_kind is not None and len(self.by_kind) != len(CALL_KINDS):
            raise ValueError(f"by_kind needs one overhead per kind ({', '.join(CALL_KINDS)}), got {len(self.by_kind)}")
        if self.layers not in PARTS_LAYERS:
            raise ValueError(f"layers must be one of {', '.join(PARTS_LAYERS)}, got {self.layers!r}")
        if self.per_byte_ms and self.layers != KERNELS:
            raise ValueError("a cost per byte of output belongs to parts priced by kernels")

    def per_kind(self) -> tuple[float, ...]:
        """The overhead of each kind: ``by_kind``, or ``latency_ms`` for all of them in a table that predates it."""
        return self.by_kind if self.by_kind is not None else (self.latency_ms,) * len(CALL_KINDS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {"latency_ms": self.latency_ms, "fitted_on": list(self.fitted_on), "measurements": self.measurements}
        if self.by_kind is not None:
            d["by_kind"] = dict(zip(CALL_KINDS, self.by_kind))
        if self.layers != ENTRIES:
            d["layers"] = self.layers
            d["latency_ms_per_output_byte"] = self.per_byte_ms
        return d


@dataclass(frozen=True)
class FamilyTerms:
    """Device terms fitted on the networks of one family only (:func:`network_family`): for a
    network of that family they replace the table's shared boundary rules, layer terms and call
    overhead, which were fitted on every network."""

    family: str
    rules: tuple[TransitionRule, ...] = ()
    layer_terms: tuple[LayerTerm, ...] = ()
    run_overhead: RunOverhead | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"family": self.family, **_terms_dict(self.rules, self.layer_terms, self.run_overhead)}


@dataclass(frozen=True)
class NetworkTerms:
    """Device terms fitted on one measured network's own configurations (version 7): for that
    network (:func:`network_fingerprint`) they replace its family's terms, and it gets no
    correction. Fitted instead of a correction where the network has more distinct measured
    configurations than the terms have unknowns (:func:`haq.hardware.fit.fit_graph`)."""

    fingerprint: str
    network: str
    fitted_on: int
    rules: tuple[TransitionRule, ...] = ()
    layer_terms: tuple[LayerTerm, ...] = ()
    run_overhead: RunOverhead | None = None
    priced_by: str = "measurement"
    """What timed the configurations the terms were fitted on: ``measurement`` (the network run
    whole) or ``parts`` (its layers and the nodes between them, each timed alone:
    :mod:`haq.hardware.parts`; version 8)."""

    def __post_init__(self) -> None:
        if self.priced_by not in PRICED_BY:
            raise ValueError(f"priced_by must be one of {', '.join(PRICED_BY)}, got {self.priced_by!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``priced_by`` only when not the version 7 default)."""
        head: dict[str, Any] = {"fingerprint": self.fingerprint, "network": self.network, "fitted_on": self.fitted_on}
        if self.priced_by != PRICED_BY[0]:
            head["priced_by"] = self.priced_by
        return {**head, **_terms_dict(self.rules, self.layer_terms, self.run_overhead)}


def _terms_dict(
    rules: Sequence[TransitionRule], layer_terms: Sequence[LayerTerm], run_overhead: RunOverhead | None
) -> dict[str, Any]:
    """The JSON fields every set of fitted device terms (a family's, a network's) has."""
    d: dict[str, Any] = {"transition_rules": [r.to_dict() for r in rules], "layer_terms": [t.to_dict() for t in layer_terms]}
    if run_overhead is not None:
        d["run_overhead"] = run_overhead.to_dict()
    return d


@dataclass(frozen=True)
class GraphExtras:
    """Graph-aware additions to the per-layer sum (empty for analytical tables)."""

    transitions: tuple[Transition, ...] = ()
    rules: tuple[TransitionRule, ...] = ()
    corrections: tuple[Correction, ...] = ()
    layer_terms: tuple[LayerTerm, ...] = ()
    run_overhead: RunOverhead | None = None
    families: tuple[FamilyTerms, ...] = ()
    """Per-family replacements of ``rules``, ``layer_terms`` and ``run_overhead`` (version 6)."""
    networks: tuple[NetworkTerms, ...] = ()
    """Per-network replacements of the same, for networks measured whole (version 7)."""
    parts_call: PartsCall | None = None
    """The isolated-model call overhead a fit by parts found (version 9); prices nothing itself."""

    def __bool__(self) -> bool:
        return bool(
            self.transitions
            or self.rules
            or self.corrections
            or self.layer_terms
            or self.run_overhead
            or self.families
            or self.networks
            or self.parts_call
        )

    @property
    def device_level(self) -> bool:
        """Whether it holds per-device terms (the version 3 fields)."""
        return bool(self.layer_terms or self.run_overhead)

    def for_family(self, family: str) -> GraphExtras:
        """The extras that price a network of ``family``: that family's own device terms where
        the table has them, else the shared ones."""
        own = next((f for f in self.families if f.family == family), None)
        if own is None:
            return self
        return GraphExtras(self.transitions, own.rules, self.corrections, own.layer_terms, own.run_overhead)

    def for_network(self, family: str, fingerprint: str) -> GraphExtras:
        """The extras that price one network: its own terms (and no correction) where the table
        has them, else its family's (:meth:`for_family`)."""
        own = next((n for n in self.networks if n.fingerprint == fingerprint), None)
        if own is None:
            return self.for_family(family)
        return GraphExtras(self.transitions, own.rules, (), own.layer_terms, own.run_overhead)

    def measured_whole(self) -> frozenset[str]:
        """Fingerprints of the networks fitted on their own whole-model measurements (own terms or
        a correction): the ones these extras price as measured, not only by their family's terms."""
        return frozenset(x.fingerprint for x in (*self.networks, *self.corrections))

    def run_overheads(self) -> tuple[RunOverhead, ...]:
        """Every fitted call overhead: shared, per family and per network."""
        own = (x.run_overhead for x in (*self.families, *self.networks))
        return tuple(o for o in (self.run_overhead, *own) if o is not None)

    def all_rules(self) -> tuple[TransitionRule, ...]:
        """Every boundary rule: shared, per family and per network."""
        return (*self.rules, *(r for f in self.families for r in f.rules), *(r for n in self.networks for r in n.rules))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``layer_terms`` and ``families`` only when present, so older tables round-trip unchanged)."""
        d: dict[str, Any] = {
            "transitions": [t.to_dict() for t in self.transitions],
            "transition_rules": [r.to_dict() for r in self.rules],
            "corrections": [c.to_dict() for c in self.corrections],
        }
        if self.layer_terms:
            d["layer_terms"] = [t.to_dict() for t in self.layer_terms]
        if self.run_overhead is not None:
            d["run_overhead"] = self.run_overhead.to_dict()
        if self.families:
            d["families"] = [f.to_dict() for f in self.families]
        if self.networks:
            d["networks"] = [n.to_dict() for n in self.networks]
        if self.parts_call is not None:
            d["parts_call"] = self.parts_call.to_dict()
        return d


@dataclass(frozen=True)
class TableData:
    """A validated table file: metadata, signatures by key, entries, graph extras."""

    meta: Mapping[str, Any]
    signatures: Mapping[str, LayerSignature]
    entries: tuple[Entry, ...]
    graph: GraphExtras = GraphExtras()

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics every entry carries."""
        return tuple(self.meta["metrics"])

    @property
    def batch(self) -> int:
        """The batch size of every signature."""
        return int(self.meta["batch"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole file."""
        d: dict[str, Any] = {
            "format": TABLE_FORMAT,
            "version": table_version(self.meta, self.graph),
            "meta": dict(self.meta),
            "signatures": {k: s.to_dict() for k, s in self.signatures.items()},
            "entries": [e.to_dict() for e in self.entries],
        }
        if self.graph:
            d["graph"] = self.graph.to_dict()
        return d


def table_version(meta: Mapping[str, Any], graph: GraphExtras | None = None) -> int:
    """11 with a call overhead found by parts that priced layers by their kernels
    (``parts_call.layers``), 10 with call overheads per kind found by parts
    (``parts_call.by_kind``), 9 with one (``parts_call``), 8 with per-network device terms
    fitted on configurations priced by parts, 7 with per-network device terms or a boundary rule
    for a max-pool (``through``), 6 with per-family device terms, 5 with a boundary rule keyed by
    the consumer's op, 4 with a layer term keyed by op, 3 with other per-device terms, else 2 with
    the machine that measured it (``meta.machine``), else 1."""
    if graph is not None and graph.parts_call is not None:
        if graph.parts_call.layers != ENTRIES:
            return 11
        return 10 if graph.parts_call.by_kind is not None else 9
    if graph is not None and any(n.priced_by != PRICED_BY[0] for n in graph.networks):
        return 8
    if graph is not None and (graph.networks or any(r.through for r in graph.all_rules())):
        return 7
    if graph is not None and graph.families:
        return 6
    if graph is not None and any(r.op for r in graph.rules):
        return 5
    if graph is not None and any(t.op for t in graph.layer_terms):
        return 4
    if graph is not None and graph.device_level:
        return 3
    return 2 if "machine" in meta else 1


def kernel_share(entry: Entry) -> float:
    """The share of an isolated single-layer run its own kernel took (``extra.kernel_share``; 1 where absent)."""
    share = entry.extra.get("kernel_share", 1.0)
    return float(share) if isinstance(share, (int, float)) and 0.0 < float(share) <= 1.0 else 1.0


def leaves_positive(overhead: RunOverhead, entry: Entry) -> bool:
    """Whether ``entry`` keeps a positive cost once its share of the call ``overhead`` is taken out."""
    return entry.latency_ms - overhead.latency_ms * kernel_share(entry) > 0


def domain(pair: BitPair) -> str:
    """``int8`` when a layer's input is quantized on the CPU (8-bit activations, QDQ), else
    ``float``: the two sides of a precision boundary."""
    return "int8" if pair[1] == 8 else "float"


def term_domain(pair: BitPair) -> str:
    """The kind a layer term prices: ``int8`` (8-bit activations), ``weight-only`` (float
    activations, quantized weights: MatMulNBits) or ``float`` (fp32)."""
    if pair[1] == 8:
        return "int8"
    return "float" if pair[0] == 32 else "weight-only"


def op_kind(signature: LayerSignature) -> str:
    """The op a layer term may be keyed by: the signature's op, with dense 1x1 convs apart
    (no window: far less work per output element than a 3x3 conv of the same width)."""
    if signature.op == "conv" and signature.kernel == (1, 1):
        return "conv1x1"
    return signature.op


def network_family(layers: Sequence[LayerInfo]) -> str:
    """``depthwise`` for a network with a depthwise conv (MobileNet-like: many small layers whose
    int8 kernels cost per element what dense ones do not), else ``dense``."""
    return "depthwise" if any(op_kind(layer.signature) == "dwconv" for layer in layers) else "dense"


def network_fingerprint(layers: Sequence[LayerInfo], batch: int) -> str:
    """Identity of a network for per-network corrections: its ordered signatures at ``batch``."""
    blob = "\n".join(layer.signature.with_batch(batch).key() for layer in layers)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dumps(data: TableData) -> str:
    """Serialize with one entry per line: diff-friendly and compact (NaN can never be written)."""
    d = data.to_dict()

    def one(v: Any) -> str:
        return json.dumps(v, allow_nan=False, separators=(", ", ": "))

    def block(items: Iterable[str], indent: str, open_: str, close: str) -> str:
        body = f",\n{indent}  ".join(items)
        return f"{open_}\n{indent}  {body}\n{indent}{close}" if body else f"{open_}{close}"

    parts = [
        f'  "format": {one(d["format"])}',
        f'  "version": {one(d["version"])}',
        '  "meta": ' + json.dumps(d["meta"], allow_nan=False, indent=2).replace("\n", "\n  "),
        '  "signatures": ' + block((f"{one(k)}: {one(v)}" for k, v in d["signatures"].items()), "  ", "{", "}"),
        '  "entries": ' + block((one(e) for e in d["entries"]), "  ", "[", "]"),
    ]
    if "graph" in d:
        graph = [
            f"    {one(k)}: " + (block((one(x) for x in v), "    ", "[", "]") if isinstance(v, list) else one(v))
            for k, v in d["graph"].items()
        ]
        parts.append('  "graph": {\n' + ",\n".join(graph) + "\n  }")
    return "{\n" + ",\n".join(parts) + "\n}\n"
