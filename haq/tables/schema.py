"""The device cost table file format (``haq.cost_table`` version 1) and its validation.

A table is one JSON object; every field below is checked on load and a bad one is a
:class:`~haq.core.errors.TableError` naming the file and the field::

    {
      "format": "haq.cost_table", "version": 1,
      "meta": {
        "device":    {"name": "bitfusion", "description": "..."},
        "runtime":   {"name": "analytical:bitfusion", "version": "haq 0.1.0"},
        "threads":   1 | null,               # intra-op threads of a measured runtime
        "protocol":  {...},                   # how costs were obtained (free-form object)
        "units":     {"latency": "ms", "energy": "mJ"},   # fixed; anything else is rejected
        "metrics":   ["latency"] | ["latency", "energy"],
        "constants": {"freq": {"value": 5e8, "unit": "Hz", "source": "..."}, ...},
        "created":   "2026-11-22T01:30:00+00:00", "updated": "...",   # updated is optional
        "tool":      {"name": "haq", "version": "0.1.0"},
        "batch":     1,                       # every signature below has this batch
        "models":    ["resnet20", ...]        # optional: models the table was built for
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
                              "energy_mj_per_elem": ..., "source": ...}],
        "corrections": [{"fingerprint": "...", "network": "resnet20", "metric": "latency",
                         "scale": 1.05, "offset": 0.01, "fitted_on": 10,
                         "per_int8_layer": 0.002}]            # optional, default 0
      }
    }

Semantics of the graph extras (used by ``CostTable.policy_cost``):

* A *boundary* lies between two layers that are consecutive in execution order. When their
  (w, a) pairs differ, the cost of the boundary is added: the ``transitions`` entry whose
  ``shape`` equals the consumer layer's input ``[batch, in_channels, in_h, in_w]`` and whose
  ``from`` / ``to`` are the producer's / consumer's (w, a); failing that, the
  ``transition_rules`` entry for that precision pair (``fixed + per_elem * elements``);
  failing that, nothing. This prices quantize / dequantize and layout changes that only
  appear where precision changes.
* A ``corrections`` entry applies to a network whose :func:`network_fingerprint` matches:
  ``cost = scale * (sum of layers + boundaries) + offset`` for its metric (``offset`` in the
  metric's unit). ``scale`` must be positive so the ranking of policies is kept. The optional
  ``per_int8_layer`` (>= 0, default 0) is added to the cost of every layer of that network
  run with 8-bit activations: the requantize work around the ops between layers (residual
  adds, pooling) that an int8 region of that particular graph pays and a single-layer
  measurement cannot see.

Costs are per inference of one batch of ``meta.batch``; latency in milliseconds, energy in
millijoules. Bits are 1..8, or 32 for float. Zero or negative costs, NaN and infinities are
rejected: every pair a table lists is a pair the device runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant.discovery import LayerInfo, LayerSignature
from haq.tables.fields import FieldReader

TABLE_FORMAT = "haq.cost_table"
TABLE_VERSION = 1
UNITS: Mapping[str, str] = {"latency": "ms", "energy": "mJ"}
METRIC_FIELDS: Mapping[str, str] = {"latency": "latency_ms", "energy": "energy_mj"}
OPS = ("conv", "dwconv", "linear")

Shape = tuple[int, int, int, int]

_META_REQUIRED = ("device", "runtime", "threads", "protocol", "units", "metrics", "constants", "created", "tool", "batch")
_META_OPTIONAL = ("updated", "models")
_ENTRY_REQUIRED = ("key", "w_bits", "a_bits", "latency_ms", "latency_iqr_ms", "samples", "source", "kernel")
_ENTRY_OPTIONAL = ("energy_mj", "raw_ms", "extra")


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
            "key": self.key, "w_bits": self.w_bits, "a_bits": self.a_bits,
            "latency_ms": self.latency_ms, "latency_iqr_ms": self.latency_iqr_ms, "samples": self.samples,
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
        d: dict[str, Any] = {"shape": list(self.shape), "from": list(self.src), "to": list(self.dst), "latency_ms": self.latency_ms}
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

    def cost(self, metric: str, elems: int) -> float:
        """Boundary cost for a tensor of ``elems`` elements."""
        if metric == "latency":
            return self.latency_ms + self.latency_ms_per_elem * elems
        assert self.energy_mj is not None and self.energy_mj_per_elem is not None
        return self.energy_mj + self.energy_mj_per_elem * elems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d: dict[str, Any] = {"from": list(self.src), "to": list(self.dst), "latency_ms": self.latency_ms,
                             "latency_ms_per_elem": self.latency_ms_per_elem}
        if self.energy_mj is not None:
            d["energy_mj"], d["energy_mj_per_elem"] = self.energy_mj, self.energy_mj_per_elem
        d["source"] = self.source
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
        d: dict[str, Any] = {"fingerprint": self.fingerprint, "network": self.network, "metric": self.metric,
                             "scale": self.scale, "offset": self.offset, "fitted_on": self.fitted_on}
        if self.per_int8_layer:
            d["per_int8_layer"] = self.per_int8_layer
        return d


@dataclass(frozen=True)
class GraphExtras:
    """Graph-aware additions to the per-layer sum (empty for analytical tables)."""

    transitions: tuple[Transition, ...] = ()
    rules: tuple[TransitionRule, ...] = ()
    corrections: tuple[Correction, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.transitions or self.rules or self.corrections)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "transitions": [t.to_dict() for t in self.transitions],
            "transition_rules": [r.to_dict() for r in self.rules],
            "corrections": [c.to_dict() for c in self.corrections],
        }


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
            "version": TABLE_VERSION,
            "meta": dict(self.meta),
            "signatures": {k: s.to_dict() for k, s in self.signatures.items()},
            "entries": [e.to_dict() for e in self.entries],
        }
        if self.graph:
            d["graph"] = self.graph.to_dict()
        return d


def network_fingerprint(layers: Sequence[LayerInfo], batch: int) -> str:
    """Identity of a network for per-network corrections: its ordered signatures at ``batch``."""
    blob = "\n".join(l.signature.with_batch(batch).key() for l in layers)
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
        graph = [f'    {one(k)}: ' + block((one(x) for x in v), "    ", "[", "]") for k, v in d["graph"].items()]
        parts.append('  "graph": {\n' + ",\n".join(graph) + "\n  }")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def loads(text: str, source: str) -> TableData:
    """Parse and validate a table file's text; ``source`` names the file in every error."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise TableError(f"{source}: duplicate JSON key '{exc.args[0]}'") from None
    except json.JSONDecodeError as exc:
        raise TableError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); the file may be truncated") from None
    return parse(raw, source)


def parse(raw: Any, source: str) -> TableData:
    """Validate a decoded table (see the module docstring for the format)."""
    r = FieldReader(source)
    top = r.obj(raw, "(top level)")
    r.keys(top, "(top level)", ("format", "version", "meta", "signatures", "entries"), ("graph",))
    if top["format"] != TABLE_FORMAT:
        r.fail("format", f"must be '{TABLE_FORMAT}', got {top['format']!r}")
    if top["version"] != TABLE_VERSION:
        r.fail("version", f"unsupported version {top['version']!r}; this haq reads version {TABLE_VERSION}")
    meta = _parse_meta(r, top["meta"])
    metrics = tuple(meta["metrics"])
    batch = int(meta["batch"])
    signatures = _parse_signatures(r, top["signatures"], batch)
    entries = _parse_entries(r, top["entries"], signatures, metrics)
    graph = _parse_graph(r, top.get("graph", {}), metrics)
    return TableData(meta=meta, signatures=signatures, entries=entries, graph=graph)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _parse_meta(r: FieldReader, raw: Any) -> dict[str, Any]:
    m = r.obj(raw, "meta")
    r.keys(m, "meta", _META_REQUIRED, _META_OPTIONAL)
    dev = r.obj(m["device"], "meta.device")
    r.keys(dev, "meta.device", ("name", "description"))
    r.string(dev["name"], "meta.device.name")
    r.string(dev["description"], "meta.device.description", empty_ok=True)
    for part in ("runtime", "tool"):
        obj = r.obj(m[part], f"meta.{part}")
        r.keys(obj, f"meta.{part}", ("name", "version"))
        r.string(obj["name"], f"meta.{part}.name")
        r.string(obj["version"], f"meta.{part}.version")
    if m["threads"] is not None:
        r.integer(m["threads"], "meta.threads", 1)
    r.obj(m["protocol"], "meta.protocol")
    metrics = r.array(m["metrics"], "meta.metrics")
    if any(not isinstance(x, str) for x in metrics) or "latency" not in metrics or len(set(metrics)) != len(metrics) or not set(metrics) <= set(UNITS):
        r.fail("meta.metrics", f"must list 'latency' and optionally 'energy', each once, got {metrics!r}")
    units = r.obj(m["units"], "meta.units")
    for metric, unit in UNITS.items():
        if units.get(metric) != unit:
            r.fail(f"meta.units.{metric}", f"must be '{unit}' (haq tables store latency in ms, energy in mJ), got {units.get(metric)!r}")
    if set(units) != set(UNITS):
        r.fail("meta.units", f"must have exactly the keys {', '.join(UNITS)}")
    consts = r.obj(m["constants"], "meta.constants")
    for name, c in consts.items():
        path = f"meta.constants.{name}"
        r.keys(r.obj(c, path), path, ("value", "unit", "source"))
        r.finite(c["value"], f"{path}.value")
        r.string(c["unit"], f"{path}.unit", empty_ok=True)
        r.string(c["source"], f"{path}.source")
    r.string(m["created"], "meta.created")
    if "updated" in m:
        r.string(m["updated"], "meta.updated")
    if "models" in m:
        for i, name in enumerate(r.array(m["models"], "meta.models")):
            r.string(name, f"meta.models[{i}]")
    r.integer(m["batch"], "meta.batch", 1)
    return m


def _parse_signatures(r: FieldReader, raw: Any, batch: int) -> dict[str, LayerSignature]:
    sigs: dict[str, LayerSignature] = {}
    for key, d in r.obj(raw, "signatures").items():
        path = f"signatures.{key}"
        r.obj(d, path)
        r.keys(d, path, ("op", "in_channels", "out_channels", "kernel", "stride", "padding", "groups", "in_h", "in_w", "bias", "batch"))
        if d["op"] not in OPS:
            r.fail(f"{path}.op", f"must be one of {', '.join(OPS)}, got {d['op']!r}")
        for f in ("in_channels", "out_channels", "groups", "in_h", "in_w", "batch"):
            r.integer(d[f], f"{path}.{f}", 1)
        for f, lo in (("kernel", 1), ("stride", 1), ("padding", 0)):
            v = d[f]
            if not isinstance(v, list) or len(v) != 2:
                r.fail(f"{path}.{f}", f"must be a list of 2 integers, got {v!r}")
            r.integer(v[0], f"{path}.{f}[0]", lo)
            r.integer(v[1], f"{path}.{f}[1]", lo)
        r.boolean(d["bias"], f"{path}.bias")
        if d["batch"] != batch:
            r.fail(f"{path}.batch", f"is {d['batch']} but meta.batch is {batch}")
        sig = LayerSignature.from_dict(d)
        if sig.key() != key:
            r.fail(path, f"key does not match its signature (the signature's key is '{sig.key()}')")
        if min(sig.out_hw) < 1:
            r.fail(path, "kernel is larger than the padded input")
        sigs[key] = sig
    return sigs


def _parse_entries(r: FieldReader, raw: Any, sigs: Mapping[str, LayerSignature], metrics: tuple[str, ...]) -> tuple[Entry, ...]:
    seen: set[tuple[str, int, int]] = set()
    out: list[Entry] = []
    for i, e in enumerate(r.array(raw, "entries")):
        path = f"entries[{i}]"
        r.obj(e, path)
        r.keys(e, path, _ENTRY_REQUIRED, _ENTRY_OPTIONAL)
        key = r.string(e["key"], f"{path}.key")
        if key not in sigs:
            r.fail(f"{path}.key", f"'{key}' is not in 'signatures'")
        w, a = r.bits(e["w_bits"], f"{path}.w_bits"), r.bits(e["a_bits"], f"{path}.a_bits")
        if (key, w, a) in seen:
            r.fail(path, f"duplicate entry for {key} at w{w}/a{a}")
        seen.add((key, w, a))
        source = r.source_kind(e["source"], f"{path}.source")
        samples = r.integer(e["samples"], f"{path}.samples", 1 if source == "measured" else 0)
        energy = None
        if "energy" in metrics:
            if "energy_mj" not in e:
                r.fail(f"{path}.energy_mj", "is missing (meta.metrics lists energy)")
            energy = r.number(e["energy_mj"], f"{path}.energy_mj", positive=True)
        elif "energy_mj" in e:
            r.fail(f"{path}.energy_mj", "is present but meta.metrics does not list energy")
        raw_ms = tuple(r.number(x, f"{path}.raw_ms[{j}]", positive=False) for j, x in enumerate(r.array(e.get("raw_ms", []), f"{path}.raw_ms")))
        out.append(Entry(
            key=key, w_bits=w, a_bits=a,
            latency_ms=r.number(e["latency_ms"], f"{path}.latency_ms", positive=True),
            latency_iqr_ms=r.number(e["latency_iqr_ms"], f"{path}.latency_iqr_ms", positive=False),
            samples=samples, source=source, kernel=r.string(e["kernel"], f"{path}.kernel"),
            energy_mj=energy, raw_ms=raw_ms, extra=r.obj(e.get("extra", {}), f"{path}.extra"),
        ))
    return tuple(out)


def _parse_graph(r: FieldReader, raw: Any, metrics: tuple[str, ...]) -> GraphExtras:
    g = r.obj(raw, "graph")
    r.keys(g, "graph", (), ("transitions", "transition_rules", "corrections"))
    energy = "energy" in metrics

    def energy_field(obj: Mapping[str, Any], path: str, name: str) -> float | None:
        if not energy:
            if name in obj:
                r.fail(f"{path}.{name}", "is present but meta.metrics does not list energy")
            return None
        if name not in obj:
            r.fail(f"{path}.{name}", "is missing (meta.metrics lists energy)")
        return r.number(obj[name], f"{path}.{name}", positive=False)

    transitions: list[Transition] = []
    seen_t: set[tuple[Shape, BitPair, BitPair]] = set()
    for i, t in enumerate(r.array(g.get("transitions", []), "graph.transitions")):
        path = f"graph.transitions[{i}]"
        r.keys(r.obj(t, path), path, ("shape", "from", "to", "latency_ms", "source", "kernel"), ("energy_mj",))
        shape_raw = r.array(t["shape"], f"{path}.shape")
        if len(shape_raw) != 4:
            r.fail(f"{path}.shape", f"must be [batch, channels, height, width], got {shape_raw!r}")
        shape = tuple(r.integer(x, f"{path}.shape[{j}]", 1) for j, x in enumerate(shape_raw))
        src, dst = r.pair(t["from"], f"{path}.from"), r.pair(t["to"], f"{path}.to")
        if src == dst:
            r.fail(path, "'from' equals 'to'; a boundary needs a precision change")
        if (shape, src, dst) in seen_t:
            r.fail(path, f"duplicate transition for shape {list(shape)} from {list(src)} to {list(dst)}")
        seen_t.add((shape, src, dst))  # type: ignore[arg-type]
        transitions.append(Transition(
            shape=shape, src=src, dst=dst,  # type: ignore[arg-type]
            latency_ms=r.number(t["latency_ms"], f"{path}.latency_ms", positive=False),
            energy_mj=energy_field(t, path, "energy_mj"),
            source=r.source_kind(t["source"], f"{path}.source"), kernel=r.string(t["kernel"], f"{path}.kernel"),
        ))
    rules: list[TransitionRule] = []
    seen_r: set[tuple[BitPair, BitPair]] = set()
    for i, t in enumerate(r.array(g.get("transition_rules", []), "graph.transition_rules")):
        path = f"graph.transition_rules[{i}]"
        r.keys(r.obj(t, path), path, ("from", "to", "latency_ms", "latency_ms_per_elem", "source"), ("energy_mj", "energy_mj_per_elem"))
        src, dst = r.pair(t["from"], f"{path}.from"), r.pair(t["to"], f"{path}.to")
        if src == dst or (src, dst) in seen_r:
            r.fail(path, f"rule from {list(src)} to {list(dst)} is {'a duplicate' if src != dst else 'not a precision change'}")
        seen_r.add((src, dst))
        rules.append(TransitionRule(
            src=src, dst=dst,
            latency_ms=r.number(t["latency_ms"], f"{path}.latency_ms", positive=False),
            latency_ms_per_elem=r.number(t["latency_ms_per_elem"], f"{path}.latency_ms_per_elem", positive=False),
            energy_mj=energy_field(t, path, "energy_mj"), energy_mj_per_elem=energy_field(t, path, "energy_mj_per_elem"),
            source=r.source_kind(t["source"], f"{path}.source"),
        ))
    corrections: list[Correction] = []
    seen_c: set[tuple[str, str]] = set()
    for i, c in enumerate(r.array(g.get("corrections", []), "graph.corrections")):
        path = f"graph.corrections[{i}]"
        r.keys(r.obj(c, path), path, ("fingerprint", "network", "metric", "scale", "offset", "fitted_on"), ("per_int8_layer",))
        fp = r.string(c["fingerprint"], f"{path}.fingerprint")
        if c["metric"] not in metrics:
            r.fail(f"{path}.metric", f"must be one of the table's metrics ({', '.join(metrics)}), got {c['metric']!r}")
        if (fp, c["metric"]) in seen_c:
            r.fail(path, f"duplicate correction for fingerprint {fp} and metric {c['metric']}")
        seen_c.add((fp, c["metric"]))
        corrections.append(Correction(
            fingerprint=fp, network=r.string(c["network"], f"{path}.network"), metric=c["metric"],
            scale=r.number(c["scale"], f"{path}.scale", positive=True), offset=r.finite(c["offset"], f"{path}.offset"),
            fitted_on=r.integer(c["fitted_on"], f"{path}.fitted_on", 1),
            per_int8_layer=r.number(c.get("per_int8_layer", 0.0), f"{path}.per_int8_layer", positive=False),
        ))
    return GraphExtras(tuple(transitions), tuple(rules), tuple(corrections))
