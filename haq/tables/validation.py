"""Reading a cost table file: JSON decoding and validation of every field (format in :mod:`haq.tables.schema`).

Every problem is one :class:`~haq.core.errors.TableError` of the form
``<file>: field '<path>': <problem>`` (see :class:`~haq.tables.fields.FieldReader`), so a user
can fix a hand-edited or truncated table without a traceback.
"""

from __future__ import annotations

from typing import Any, Mapping

from haq.core import jsonio
from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant.discovery import LayerSignature
from haq.tables.fields import FieldReader
from haq.tables.schema import (
    CALL_KINDS,
    DOMAINS,
    ENTRIES,
    FAMILIES,
    KERNELS,
    OP_KINDS,
    OPS,
    PARTS_LAYERS,
    PRICED_BY,
    READABLE_VERSIONS,
    TABLE_FORMAT,
    THROUGH_KINDS,
    UNITS,
    WEIGHT_CONTAINERS,
    Correction,
    Entry,
    FamilyTerms,
    GraphExtras,
    LayerTerm,
    NetworkTerms,
    PartsCall,
    RunOverhead,
    Shape,
    TableData,
    Transition,
    TransitionRule,
    leaves_positive,
    table_version,
)

_META_REQUIRED = ("device", "runtime", "threads", "protocol", "units", "metrics", "constants", "created", "tool", "batch")
_META_OPTIONAL = ("updated", "models", "machine", "inputs")
_ENTRY_REQUIRED = ("key", "w_bits", "a_bits", "latency_ms", "latency_iqr_ms", "samples", "source", "kernel")
_ENTRY_OPTIONAL = ("energy_mj", "raw_ms", "extra")


def loads(text: str, source: str) -> TableData:
    """Parse and validate a table file's text; ``source`` names the file in every error."""
    return parse(jsonio.loads(text, source, error=TableError), source)


def parse(raw: Any, source: str) -> TableData:
    """Validate a decoded table (the format is described in :mod:`haq.tables.schema`)."""
    r = FieldReader(source)
    top = r.obj(raw, "(top level)")
    r.keys(top, "(top level)", ("format", "version", "meta", "signatures", "entries"), ("graph",))
    if top["format"] != TABLE_FORMAT:
        r.fail("format", f"must be '{TABLE_FORMAT}', got {top['format']!r}")
    if top["version"] not in READABLE_VERSIONS or isinstance(top["version"], bool):
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        r.fail("version", f"unsupported version {top['version']!r}; this haq reads versions {readable}")
    meta = _parse_meta(r, top["meta"])
    if top["version"] < table_version(meta):
        r.fail("meta.machine", f"needs version {table_version(meta)} of the format, the file says version {top['version']}")
    metrics = tuple(meta["metrics"])
    batch = int(meta["batch"])
    signatures = _parse_signatures(r, top["signatures"], batch)
    entries = _parse_entries(r, top["entries"], signatures, metrics)
    graph = _parse_graph(r, top.get("graph", {}), metrics)
    if graph.device_level and top["version"] < 3:
        field = "graph.layer_terms" if graph.layer_terms else "graph.run_overhead"
        r.fail(field, f"needs version 3 of the format, the file says version {top['version']}")
    keyed = [i for i, t in enumerate(graph.layer_terms) if t.op]
    if keyed and top["version"] < 4:
        r.fail(f"graph.layer_terms[{keyed[0]}].op", f"needs version 4 of the format, the file says version {top['version']}")
    keyed_rules = [i for i, t in enumerate(graph.rules) if t.op]
    if keyed_rules and top["version"] < 5:
        r.fail(
            f"graph.transition_rules[{keyed_rules[0]}].op",
            f"needs version 5 of the format, the file says version {top['version']}",
        )
    if graph.families and top["version"] < 6:
        r.fail("graph.families", f"needs version 6 of the format, the file says version {top['version']}")
    if any(rule.through for rule in graph.all_rules()) and top["version"] < 7:
        r.fail(
            "graph.transition_rules", f"a 'through' rule needs version 7 of the format, the file says version {top['version']}"
        )
    if graph.networks and top["version"] < 7:
        r.fail("graph.networks", f"needs version 7 of the format, the file says version {top['version']}")
    if any(n.priced_by != PRICED_BY[0] for n in graph.networks) and top["version"] < 8:
        r.fail("graph.networks", f"terms priced by parts need version 8 of the format, the file says version {top['version']}")
    if graph.parts_call is not None and top["version"] < 9:
        r.fail("graph.parts_call", f"needs version 9 of the format, the file says version {top['version']}")
    if graph.parts_call is not None and graph.parts_call.by_kind is not None and top["version"] < 10:
        r.fail("graph.parts_call.by_kind", f"needs version 10 of the format, the file says version {top['version']}")
    if graph.parts_call is not None and graph.parts_call.layers != ENTRIES and top["version"] < 11:
        r.fail("graph.parts_call.layers", f"needs version 11 of the format, the file says version {top['version']}")
    if graph.run_overhead is not None:
        _check_overhead(r, graph.run_overhead, entries)
    for i, fam in enumerate(graph.families):
        if fam.run_overhead is not None:
            _check_overhead(r, fam.run_overhead, entries, f"graph.families[{i}].run_overhead")
    for i, net in enumerate(graph.networks):
        if net.run_overhead is not None:
            _check_overhead(r, net.run_overhead, entries, f"graph.networks[{i}].run_overhead")
    return TableData(meta=meta, signatures=signatures, entries=entries, graph=graph)


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
    protocol = r.obj(m["protocol"], "meta.protocol")
    if "weights" in protocol and protocol["weights"] not in WEIGHT_CONTAINERS:
        r.fail("meta.protocol.weights", f"must be one of {', '.join(WEIGHT_CONTAINERS)}, got {protocol['weights']!r}")
    metrics = r.array(m["metrics"], "meta.metrics")
    if (
        any(not isinstance(x, str) for x in metrics)
        or "latency" not in metrics
        or len(set(metrics)) != len(metrics)
        or not set(metrics) <= set(UNITS)
    ):
        r.fail("meta.metrics", f"must list 'latency' and optionally 'energy', each once, got {metrics!r}")
    units = r.obj(m["units"], "meta.units")
    for metric, unit in UNITS.items():
        if units.get(metric) != unit:
            r.fail(
                f"meta.units.{metric}",
                f"must be '{unit}' (haq tables store latency in ms, energy in mJ), got {units.get(metric)!r}",
            )
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
    for model, shapes in r.obj(m.get("inputs", {}), "meta.inputs").items():  # model -> [[C, H, W], ...] it was priced at
        for i, shape in enumerate(r.array(shapes, f"meta.inputs.{model}")):
            if len(r.array(shape, f"meta.inputs.{model}[{i}]")) != 3:
                r.fail(f"meta.inputs.{model}[{i}]", f"must be [C, H, W], got {shape!r}")
            for dim in shape:
                r.integer(dim, f"meta.inputs.{model}[{i}]", 1)
    if "machine" in m:
        _parse_machine(r, m["machine"])
    return m


def _parse_machine(r: FieldReader, raw: Any) -> None:
    """The shape of a machine fingerprint; its fields belong to ``haq.hardware.device.machine``."""
    m = r.obj(raw, "meta.machine")
    if "identity" not in m:
        r.fail("meta.machine.identity", "is missing (the fingerprint's hash)")
    r.string(m["identity"], "meta.machine.identity")
    if m.get("probe_ms") is not None:
        r.number(m["probe_ms"], "meta.machine.probe_ms", positive=True)
    if "remote" in m:
        r.boolean(m["remote"], "meta.machine.remote")
    for i, flag in enumerate(r.array(m.get("flags", []), "meta.machine.flags")):
        r.string(flag, f"meta.machine.flags[{i}]")
    if "caches_kib" in m:
        for level, kib in r.obj(m["caches_kib"], "meta.machine.caches_kib").items():
            r.integer(kib, f"meta.machine.caches_kib.{level}", 1)
    for key in ("logical_cores", "physical_cores"):
        if m.get(key) is not None:
            r.integer(m[key], f"meta.machine.{key}", 1)


def _parse_signatures(r: FieldReader, raw: Any, batch: int) -> dict[str, LayerSignature]:
    sigs: dict[str, LayerSignature] = {}
    for key, d in r.obj(raw, "signatures").items():
        path = f"signatures.{key}"
        r.obj(d, path)
        r.keys(
            d,
            path,
            ("op", "in_channels", "out_channels", "kernel", "stride", "padding", "groups", "in_h", "in_w", "bias", "batch"),
        )
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
        raw_ms = tuple(
            r.number(x, f"{path}.raw_ms[{j}]", positive=False)
            for j, x in enumerate(r.array(e.get("raw_ms", []), f"{path}.raw_ms"))
        )
        out.append(
            Entry(
                key=key,
                w_bits=w,
                a_bits=a,
                latency_ms=r.number(e["latency_ms"], f"{path}.latency_ms", positive=True),
                latency_iqr_ms=r.number(e["latency_iqr_ms"], f"{path}.latency_iqr_ms", positive=False),
                samples=samples,
                source=source,
                kernel=r.string(e["kernel"], f"{path}.kernel"),
                energy_mj=energy,
                raw_ms=raw_ms,
                extra=r.obj(e.get("extra", {}), f"{path}.extra"),
            )
        )
    return tuple(out)


def _parse_graph(r: FieldReader, raw: Any, metrics: tuple[str, ...]) -> GraphExtras:
    g = r.obj(raw, "graph")
    r.keys(
        g,
        "graph",
        (),
        ("transitions", "transition_rules", "corrections", "layer_terms", "run_overhead", "families", "networks", "parts_call"),
    )
    energy = "energy" in metrics
    return GraphExtras(
        _parse_transitions(r, g.get("transitions", []), energy),
        _parse_rules(r, g.get("transition_rules", []), energy),
        _parse_corrections(r, g.get("corrections", []), metrics),
        _parse_layer_terms(r, g.get("layer_terms", []), metrics),
        _parse_overhead(r, g["run_overhead"], metrics) if "run_overhead" in g else None,
        _parse_families(r, g.get("families", []), metrics),
        _parse_networks(r, g.get("networks", []), metrics),
        _parse_parts_call(r, g["parts_call"]) if "parts_call" in g else None,
    )


def _parse_terms(
    r: FieldReader, obj: Mapping[str, Any], path: str, metrics: tuple[str, ...]
) -> tuple[tuple[TransitionRule, ...], tuple[LayerTerm, ...], RunOverhead | None]:
    """The rules, layer terms and call overhead every set of fitted device terms has."""
    return (
        _parse_rules(r, obj["transition_rules"], "energy" in metrics, f"{path}.transition_rules"),
        _parse_layer_terms(r, obj["layer_terms"], metrics, f"{path}.layer_terms"),
        _parse_overhead(r, obj["run_overhead"], metrics, f"{path}.run_overhead") if "run_overhead" in obj else None,
    )


def _parse_networks(r: FieldReader, raw: Any, metrics: tuple[str, ...]) -> tuple[NetworkTerms, ...]:
    out: list[NetworkTerms] = []
    for i, n in enumerate(r.array(raw, "graph.networks")):
        path = f"graph.networks[{i}]"
        required = ("fingerprint", "network", "fitted_on", "transition_rules", "layer_terms")
        r.keys(r.obj(n, path), path, required, ("run_overhead", "priced_by"))
        fp = r.string(n["fingerprint"], f"{path}.fingerprint")
        if any(x.fingerprint == fp for x in out):
            r.fail(f"{path}.fingerprint", f"duplicate terms for network fingerprint {fp}")
        out.append(
            NetworkTerms(
                fp,
                r.string(n["network"], f"{path}.network"),
                r.integer(n["fitted_on"], f"{path}.fitted_on", 1),
                *_parse_terms(r, n, path, metrics),
                priced_by=_priced_by(r, n.get("priced_by", PRICED_BY[0]), f"{path}.priced_by"),
            )
        )
    return tuple(out)


def _priced_by(r: FieldReader, v: Any, path: str) -> str:
    if v not in PRICED_BY:
        r.fail(path, f"must be one of {', '.join(PRICED_BY)} (or absent: measurement), got {v!r}")
    return str(v)


def _parse_families(r: FieldReader, raw: Any, metrics: tuple[str, ...]) -> tuple[FamilyTerms, ...]:
    out: list[FamilyTerms] = []
    for i, f in enumerate(r.array(raw, "graph.families")):
        path = f"graph.families[{i}]"
        r.keys(r.obj(f, path), path, ("family", "transition_rules", "layer_terms"), ("run_overhead",))
        if f["family"] not in FAMILIES:
            r.fail(f"{path}.family", f"must be one of {', '.join(FAMILIES)}, got {f['family']!r}")
        if any(x.family == f["family"] for x in out):
            r.fail(f"{path}.family", f"duplicate terms for family {f['family']}")
        out.append(FamilyTerms(f["family"], *_parse_terms(r, f, path, metrics)))
    return tuple(out)


def _parse_parts_call(r: FieldReader, raw: Any, path: str = "graph.parts_call") -> PartsCall:
    optional = ("by_kind", "layers", "latency_ms_per_output_byte")
    r.keys(r.obj(raw, path), path, ("latency_ms", "fitted_on", "measurements"), optional)
    names = r.array(raw["fitted_on"], f"{path}.fitted_on")
    if not names:
        r.fail(f"{path}.fitted_on", "must name the networks measured whole that the overhead was fitted on, got []")
    by_kind = None
    if "by_kind" in raw:
        kinds = r.obj(raw["by_kind"], f"{path}.by_kind")
        r.keys(kinds, f"{path}.by_kind", CALL_KINDS)
        by_kind = tuple(r.number(kinds[k], f"{path}.by_kind.{k}", positive=False) for k in CALL_KINDS)
    layers = raw.get("layers", ENTRIES)
    if layers not in PARTS_LAYERS:
        r.fail(f"{path}.layers", f"must be one of {', '.join(PARTS_LAYERS)}, got {layers!r}")
    per_byte = 0.0
    if "latency_ms_per_output_byte" in raw:
        if layers != KERNELS:
            r.fail(f"{path}.latency_ms_per_output_byte", "belongs to parts priced by kernels (layers: kernels)")
        per_byte = r.number(raw["latency_ms_per_output_byte"], f"{path}.latency_ms_per_output_byte", positive=False)
    return PartsCall(
        r.number(raw["latency_ms"], f"{path}.latency_ms", positive=False),
        tuple(r.string(n, f"{path}.fitted_on[{i}]") for i, n in enumerate(names)),
        r.integer(raw["measurements"], f"{path}.measurements", 1),
        by_kind,
        layers,
        per_byte,
    )


def _parse_overhead(r: FieldReader, raw: Any, metrics: tuple[str, ...], path: str = "graph.run_overhead") -> RunOverhead:
    r.keys(r.obj(raw, path), path, ("metric", "latency_ms", "probe_ms"))
    if raw["metric"] != "latency" or "latency" not in metrics:
        r.fail(f"{path}.metric", f"must be 'latency' (a metric of the table), got {raw['metric']!r}")
    probe = r.number(raw["probe_ms"], f"{path}.probe_ms", positive=True)
    value = r.number(raw["latency_ms"], f"{path}.latency_ms", positive=False)
    if value > probe:
        r.fail(f"{path}.latency_ms", f"{value} exceeds the measured call time probe_ms ({probe})")
    return RunOverhead("latency", value, probe)


def _check_overhead(r: FieldReader, overhead: RunOverhead, entries: tuple[Entry, ...], path: str = "graph.run_overhead") -> None:
    """Every entry must stay positive once the call overhead is taken out of it."""
    for i, e in enumerate(entries):
        if not leaves_positive(overhead, e):
            r.fail(
                f"{path}.latency_ms",
                f"{overhead.latency_ms} ms would leave entries[{i}] ({e.key} w{e.w_bits}a{e.a_bits}, "
                f"{e.latency_ms} ms) without a positive cost",
            )


def _parse_layer_terms(
    r: FieldReader, raw: Any, metrics: tuple[str, ...], where: str = "graph.layer_terms"
) -> tuple[LayerTerm, ...]:
    out: list[LayerTerm] = []
    seen: set[tuple[str, str, str]] = set()
    for i, t in enumerate(r.array(raw, where)):
        path = f"{where}[{i}]"
        fields = ("domain", "metric", "fixed", "per_in_elem", "per_out_elem", "networks", "fitted_on")
        r.keys(r.obj(t, path), path, fields, ("op",))
        if t["domain"] not in DOMAINS:
            r.fail(f"{path}.domain", f"must be one of {', '.join(DOMAINS)}, got {t['domain']!r}")
        if t["metric"] not in metrics:
            r.fail(f"{path}.metric", f"must be one of the table's metrics ({', '.join(metrics)}), got {t['metric']!r}")
        op = t.get("op", "")
        if "op" in t and op not in OP_KINDS:
            r.fail(f"{path}.op", f"must be one of {', '.join(OP_KINDS)} (or absent: every op), got {op!r}")
        if (t["domain"], op, t["metric"]) in seen:
            r.fail(path, f"duplicate layer term for domain {t['domain']}, op {op or 'any'} and metric {t['metric']}")
        seen.add((t["domain"], op, t["metric"]))
        nets = r.array(t["networks"], f"{path}.networks")
        out.append(
            LayerTerm(
                domain=t["domain"],
                metric=t["metric"],
                fixed=r.finite(t["fixed"], f"{path}.fixed"),
                per_in_elem=r.number(t["per_in_elem"], f"{path}.per_in_elem", positive=False),
                per_out_elem=r.number(t["per_out_elem"], f"{path}.per_out_elem", positive=False),
                networks=tuple(r.string(n, f"{path}.networks[{k}]") for k, n in enumerate(nets)),
                fitted_on=r.integer(t["fitted_on"], f"{path}.fitted_on", 1),
                op=op,
            )
        )
    return tuple(out)


def _energy_field(r: FieldReader, obj: Mapping[str, Any], path: str, name: str, energy: bool) -> float | None:
    """An energy field of the graph extras: required iff the table has the energy metric."""
    if not energy:
        if name in obj:
            r.fail(f"{path}.{name}", "is present but meta.metrics does not list energy")
        return None
    if name not in obj:
        r.fail(f"{path}.{name}", "is missing (meta.metrics lists energy)")
    return r.number(obj[name], f"{path}.{name}", positive=False)


def _parse_transitions(r: FieldReader, raw: Any, energy: bool) -> tuple[Transition, ...]:
    out: list[Transition] = []
    seen: set[tuple[Shape, BitPair, BitPair]] = set()
    for i, t in enumerate(r.array(raw, "graph.transitions")):
        path = f"graph.transitions[{i}]"
        r.keys(r.obj(t, path), path, ("shape", "from", "to", "latency_ms", "source", "kernel"), ("energy_mj",))
        shape_raw = r.array(t["shape"], f"{path}.shape")
        if len(shape_raw) != 4:
            r.fail(f"{path}.shape", f"must be [batch, channels, height, width], got {shape_raw!r}")
        n, c, h, w = (r.integer(x, f"{path}.shape[{j}]", 1) for j, x in enumerate(shape_raw))
        shape: Shape = (n, c, h, w)
        src, dst = r.pair(t["from"], f"{path}.from"), r.pair(t["to"], f"{path}.to")
        if src == dst:
            r.fail(path, "'from' equals 'to'; a boundary needs a precision change")
        if (shape, src, dst) in seen:
            r.fail(path, f"duplicate transition for shape {list(shape)} from {list(src)} to {list(dst)}")
        seen.add((shape, src, dst))
        out.append(
            Transition(
                shape=shape,
                src=src,
                dst=dst,
                latency_ms=r.number(t["latency_ms"], f"{path}.latency_ms", positive=False),
                energy_mj=_energy_field(r, t, path, "energy_mj", energy),
                source=r.source_kind(t["source"], f"{path}.source"),
                kernel=r.string(t["kernel"], f"{path}.kernel"),
            )
        )
    return tuple(out)


def _parse_rules(r: FieldReader, raw: Any, energy: bool, where: str = "graph.transition_rules") -> tuple[TransitionRule, ...]:
    out: list[TransitionRule] = []
    seen: set[tuple[BitPair, BitPair, str]] = set()
    for i, t in enumerate(r.array(raw, where)):
        path = f"{where}[{i}]"
        r.keys(
            r.obj(t, path),
            path,
            ("from", "to", "latency_ms", "latency_ms_per_elem", "source"),
            ("energy_mj", "energy_mj_per_elem", "op", "through"),
        )
        src, dst = r.pair(t["from"], f"{path}.from"), r.pair(t["to"], f"{path}.to")
        op, through = t.get("op", ""), t.get("through", "")
        if "op" in t and op not in OP_KINDS:
            r.fail(f"{path}.op", f"must be one of {', '.join(OP_KINDS)} (or absent: any consumer), got {op!r}")
        if "through" in t and through not in THROUGH_KINDS:
            r.fail(f"{path}.through", f"must be one of {', '.join(THROUGH_KINDS)} (or absent: the boundary), got {through!r}")
        if through and op:
            r.fail(path, "a rule with 'through' prices the pool for any consumer; it takes no 'op'")
        if src == dst or (src, dst, op, through) in seen:
            r.fail(path, f"rule from {list(src)} to {list(dst)} is {'a duplicate' if src != dst else 'not a precision change'}")
        seen.add((src, dst, op, through))
        out.append(
            TransitionRule(
                src=src,
                dst=dst,
                latency_ms=r.number(t["latency_ms"], f"{path}.latency_ms", positive=False),
                latency_ms_per_elem=r.number(t["latency_ms_per_elem"], f"{path}.latency_ms_per_elem", positive=False),
                energy_mj=_energy_field(r, t, path, "energy_mj", energy),
                energy_mj_per_elem=_energy_field(r, t, path, "energy_mj_per_elem", energy),
                source=r.source_kind(t["source"], f"{path}.source"),
                op=op,
                through=through,
            )
        )
    return tuple(out)


def _parse_corrections(r: FieldReader, raw: Any, metrics: tuple[str, ...]) -> tuple[Correction, ...]:
    out: list[Correction] = []
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(r.array(raw, "graph.corrections")):
        path = f"graph.corrections[{i}]"
        r.keys(r.obj(c, path), path, ("fingerprint", "network", "metric", "scale", "offset", "fitted_on"), ("per_int8_layer",))
        fp = r.string(c["fingerprint"], f"{path}.fingerprint")
        if c["metric"] not in metrics:
            r.fail(f"{path}.metric", f"must be one of the table's metrics ({', '.join(metrics)}), got {c['metric']!r}")
        if (fp, c["metric"]) in seen:
            r.fail(path, f"duplicate correction for fingerprint {fp} and metric {c['metric']}")
        seen.add((fp, c["metric"]))
        out.append(
            Correction(
                fingerprint=fp,
                network=r.string(c["network"], f"{path}.network"),
                metric=c["metric"],
                scale=r.number(c["scale"], f"{path}.scale", positive=True),
                offset=r.finite(c["offset"], f"{path}.offset"),
                fitted_on=r.integer(c["fitted_on"], f"{path}.fitted_on", 1),
                per_int8_layer=r.number(c.get("per_int8_layer", 0.0), f"{path}.per_int8_layer", positive=False),
            )
        )
    return tuple(out)
