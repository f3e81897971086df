"""What onnxruntime runs for a network, priced node by node: a prediction with no whole-model
measurement of the network.

A network's time on onnxruntime is its layers plus everything the graph optimizer puts
between them, and that depends on each junction: the layout the neighbouring kernels chose
(NCHWc for float convs, NHWC for int8 ones), where Quantize / Dequantize pairs land, whether a
max-pool runs in int8 or float, whether a residual add is fused into a conv or runs alone.
Per-element device terms fitted across networks cannot see any of that, so they do not carry to
a network whose junctions differ from the fitted ones'. What does carry is the kernels
themselves: this module compiles the network's exported policy (``ORT_ENABLE_ALL``, the graph
the CPU provider runs; compiling is not timing) and rebuilds every node of it as a one-node
model with the node's own attributes, constants and input shapes (read from one profiled run
whose times are discarded): the nodes between layers, and the layer kernels as the network runs
them (a float conv in its NCHWc form with the activation and a residual add fused in, an int8
conv on the layout its neighbours left). Those one-node models are timed on the device like
single-layer entries, shared by every network and policy that has the same node.

The prediction (:func:`parts_ms`) is the nodes' times summed, less what each isolated model
beyond the network's own pays for being alone: a call overhead, and the cost of handing its
output back on every call, which a node inside the network does not (timed,
:func:`timed_call_cost`: the call overhead at one element and at :data:`OUTPUT_PROBE`). The
overhead is the unknown, per device: fitted on networks measured whole (:func:`fit_overhead`),
or timed (:func:`call_overhead`: a one-node model against a chain of them). Priced this way,
the overheads fitted per kind on seven of eight networks came out close together (3.9-4.4 µs;
only the weight-only kernel's, seen mostly in one network, strays), and one for every call
priced the eighth better, so one overhead is what a fit keeps. A layer's single-layer entry
(its isolated model, reorders and all, times the kernel's share of it) instead missed what the
compiled kernel does in the graph (a fused residual add), and the overhead it needed ranged
0-3.4 µs by network. The figures are in ``latency_tables/README.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from scipy.optimize import nnls

from haq.export import ExportError, session_options
from haq.export.verify import FLOAT_KERNELS, INT8_KERNELS
from haq.tables.schema import CALL_KINDS, DOMAINS

LAYER_KERNELS = INT8_KERNELS | FLOAT_KERNELS | frozenset({"MatMulNBits"})
"""Op types that compute a quantizable layer (priced by the table's single-layer entries)."""
_TENSOR_TYPES = {
    "float": TensorProto.FLOAT,
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
}


NODE = CALL_KINDS[-1]
"""The kind of a compiled node that is not a layer kernel."""


def kernel_kind(op_type: str) -> str:
    """What kind of isolated model a compiled node is (:data:`CALL_KINDS`): the domain of a layer
    kernel (``int8``, ``weight-only`` for MatMulNBits, ``float``), else a node between layers."""
    if op_type not in LAYER_KERNELS:
        return NODE
    if op_type == "MatMulNBits":
        return "weight-only"
    return "int8" if op_type in INT8_KERNELS else "float"


@dataclass(frozen=True)
class OpCall:
    """One node onnxruntime runs: a key that two identical nodes share (op, attributes, input and
    output types and shapes), a one-node model that runs it, and its kind (:func:`kernel_kind`)."""

    key: str
    model: bytes
    kind: str = NODE
    out_bytes: int = 0
    """Bytes of its outputs: what an isolated model hands back on every call."""


@dataclass(frozen=True)
class CompiledGraph:
    """Every node of a compiled network, layer kernels included, in graph order."""

    ops: tuple[OpCall, ...]

    @property
    def layer_kernels(self) -> int:
        """How many of the nodes are layer kernels."""
        return sum(op.kind != NODE for op in self.ops)

    def between(self) -> tuple[OpCall, ...]:
        """The nodes that are not layer kernels."""
        return tuple(op for op in self.ops if op.kind == NODE)


def compile_graph(onnx_bytes: bytes, threads: int = 1) -> CompiledGraph:
    """The graph onnxruntime runs for ``onnx_bytes`` and the one-node model of each of its
    nodes; :class:`ExportError` if it cannot be compiled or a node cannot be rebuilt."""
    opt, shapes = _compiled_with_shapes(onnx_bytes, threads)
    inits = {t.name: t for t in opt.graph.initializer}
    ops: list[OpCall] = []
    for node in opt.graph.node:
        if node.name not in shapes:
            raise ExportError(f"node '{node.name}' ({node.op_type}) has no shapes in onnxruntime's profile; cannot price it")
        ins, outs = shapes[node.name]
        ins = _with_constants(node, ins, inits)
        model = _one_node_model(opt, node, ins, outs, inits)
        ops.append(OpCall(_key(node, ins, outs), model, kernel_kind(node.op_type), _bytes(outs)))
    return CompiledGraph(tuple(ops))


@dataclass
class NodeSet:
    """The distinct nodes over many compiled configurations, each kept once (a node that recurs,
    in one network or across networks, is timed once), and each one's kind."""

    models: list[bytes] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    out_bytes: list[int] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, onnx_bytes: bytes, layers: int, network: str) -> list[int]:
        """Compile one configuration of ``network`` (``layers`` quantizable layers); the index in
        :attr:`models` of each of its nodes, layer kernels included, in graph order."""
        graph = compile_graph(onnx_bytes)
        if graph.layer_kernels != layers:
            raise ExportError(
                f"{network}: onnxruntime compiled {graph.layer_kernels} layer kernels for its {layers} layers; "
                "it cannot be priced by parts (measure it whole)"
            )
        for op in graph.ops:
            if op.key not in self._index:
                self._index[op.key] = len(self.models)
                self.models.append(op.model)
                self.kinds.append(op.kind)
                self.out_bytes.append(op.out_bytes)
        return [self._index[op.key] for op in graph.ops]

    def parts(self, node_ms: Sequence[float], row: Sequence[int]) -> Parts:
        """One configuration (its node indices, ``row``) priced by its compiled nodes timed alone
        (``node_ms``, by index): the layer kernels' times summed, one isolated call per kernel in
        its domain, and the nodes between them."""
        kernels = [i for i in row if self.kinds[i] != NODE]
        shares = tuple(float(sum(self.kinds[i] == d for i in kernels)) for d in DOMAINS)
        between = tuple(node_ms[i] for i in row if self.kinds[i] == NODE)
        out = float(sum(self.out_bytes[i] for i in row))
        return Parts(float(sum(node_ms[i] for i in kernels)), shares, between, out)


@dataclass(frozen=True)
class Parts:
    """One configuration priced by parts: its layers' times summed (``layer_ms``: their compiled
    kernels timed alone, or their single-layer entries), the isolated calls those hold per term
    domain (``shares``, in :data:`DOMAINS` order: one per kernel, or the entries' kernel shares)
    and the one-node times of the nodes between its layers (``op_ms``); ``out_bytes``: the
    output bytes of its isolated models summed (0 where not known), each of which hands its
    output back on every call, which a node inside the network does not."""

    layer_ms: float
    shares: tuple[float, ...]
    op_ms: tuple[float, ...]
    out_bytes: float = 0.0

    def __post_init__(self) -> None:
        if len(self.shares) != len(DOMAINS):
            raise ValueError(f"shares must hold one sum per domain ({', '.join(DOMAINS)}), got {len(self.shares)}")

    def total(self) -> float:
        """The parts summed, every isolated model's call overhead still in."""
        return self.layer_ms + float(sum(self.op_ms))

    def calls(self) -> np.ndarray:
        """Call overheads the parts hold beyond the network's own, per kind (:data:`CALL_KINDS`):
        the network's one call is counted as a node's (a model that runs one small node)."""
        return np.array([*self.shares, len(self.op_ms) - 1.0])


def parts_ms(parts: Parts, overhead: Sequence[float], per_byte: float = 0.0) -> float:
    """A network's predicted time: its parts summed, less the call overhead of each isolated
    model but the network's own, ``overhead`` (ms) per kind in :data:`CALL_KINDS` order, and
    ``per_byte`` (ms) for every byte of output they hand back (the network's few logits, which
    it hands back too, are left in)."""
    return parts.total() - float(np.dot(_kinds(overhead), parts.calls())) - per_byte * parts.out_bytes


def uniform(overhead_ms: float) -> tuple[float, ...]:
    """One call overhead for every kind: a timed one, or one kept by a fit with no kinds."""
    return (overhead_ms,) * len(CALL_KINDS)


def fit_overhead(rows: Sequence[tuple[Parts, float]], per_byte: float = 0.0) -> tuple[float, tuple[float, ...]]:
    """The call overheads (ms) that make :func:`parts_ms` best match measured networks in relative
    terms, from ``rows`` of (parts, measured ms), their output cost ``per_byte`` (ms, timed:
    :func:`timed_call_cost`) taken out first: one for every call alike (closed-form least
    squares, floored at 0), and one per kind (non-negative least squares), where a kind no
    configuration of ``rows`` calls takes the pooled one.

    Which one prices depends on the parts. Layers priced by their single-layer entries needed one
    per kind (on three quiet runs of ``bench/tables.py``, each network priced with overheads
    fitted on the other seven: 6, 7 and 7 of 8 networks at >= 80 % within ±10 % against 5 of 8
    pooled); layers priced by their compiled kernels need one: on two benchmark runs, 8 and 7 of 8
    pooled against 6 and 6 per kind (7 and 7 against 6 and 6 on two runs of a throwaway script),
    a kind seen in few configurations (a weight-only kernel is mostly the MLP's) being fitted on
    little; latency_tables/README.md."""
    if not rows:
        raise ValueError("fitting the call overhead needs at least one measured network")
    meas = np.array([m for _, m in rows])
    calls = np.array([p.calls() for p, _ in rows]) / meas[:, None]
    y = np.array([p.total() - per_byte * p.out_bytes for p, _ in rows]) / meas - 1.0  # parts_ms / meas - 1 = y - calls @ r
    pooled_x = calls.sum(axis=1)
    pooled = max(0.0, float(np.dot(pooled_x, y) / np.dot(pooled_x, pooled_x))) if np.any(pooled_x) else 0.0
    seen = np.flatnonzero(np.any(calls != 0.0, axis=0))
    by_kind = np.full(len(CALL_KINDS), pooled)
    if seen.size:
        by_kind[seen] = nnls(calls[:, seen], y)[0]
    return pooled, tuple(float(v) for v in by_kind)


def bounded_overhead(
    parts: Sequence[Parts], overhead: Sequence[float], per_byte: float = 0.0, floor: float = 0.05
) -> tuple[tuple[float, ...], float, bool]:
    """``overhead`` (per kind) and the output cost ``per_byte`` scaled down alike, if need be,
    until every configuration of ``parts`` keeps at least ``floor`` of its parts; and whether they
    were. Why: a fit on noisy measurements may ask for more, and a configuration priced at or
    below zero is no price."""
    r = _kinds(overhead)
    keep, scale = 1.0 - floor, 1.0
    for p in parts:
        taken = float(np.dot(r, p.calls())) + per_byte * p.out_bytes
        if taken > keep * p.total():
            scale = min(scale, keep * p.total() / taken)
    return tuple(float(v) for v in r * scale), per_byte * scale, scale < 1.0


def describe_overhead(overhead: Sequence[float]) -> str:
    """The call overheads per kind in µs, for a log line or ``haq tables show``."""
    return ", ".join(f"{kind} {1000 * ms:.2f}" for kind, ms in zip(CALL_KINDS, _kinds(overhead)))


def _kinds(overhead: Sequence[float]) -> np.ndarray:
    if len(overhead) != len(CALL_KINDS):
        raise ValueError(f"the call overhead needs one value per kind ({', '.join(CALL_KINDS)}), got {len(overhead)}")
    return np.asarray(overhead, dtype=float)


CHAIN_NODES = 16
"""Nodes in the chain model of :func:`overhead_models`."""


OUTPUT_PROBE = 65536
"""Elements of the second pair of call-overhead models (256 KiB of float output): an isolated
model hands its output back on every call, and on this machine the overhead timed at this size
was 5.0 µs against 3.8 µs at one element (4.8 ns per KiB), as much as a fit across eight networks
found (latency_tables/README.md)."""


def overhead_models(chain: int = CHAIN_NODES, size: int = 1) -> tuple[bytes, bytes]:
    """Two models that time the call overhead of an isolated model: one Relu on ``size``
    elements, and ``chain`` of them in a row (:func:`call_overhead`)."""
    names = [f"t{i}" for i in range(chain + 1)]

    def model(n: int) -> bytes:
        nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(n)]
        graph = helper.make_graph(
            nodes,
            "haq_call_overhead",
            [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [size])],
            [helper.make_tensor_value_info(names[n], TensorProto.FLOAT, [size])],
        )
        out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        out.ir_version = 10
        return out.SerializeToString()

    return model(1), model(chain)


def call_overhead(one_ms: float, chain_ms: float, chain: int = CHAIN_NODES) -> float:
    """The time an isolated model pays beyond its node: the one-node model's time less what one
    more node costs inside a model (the chain's slope), floored at 0."""
    if chain < 2:
        raise ValueError(f"the chain needs at least 2 nodes, got {chain}")
    return max(0.0, one_ms - (chain_ms - one_ms) / (chain - 1))


def call_cost_models(chain: int = CHAIN_NODES) -> tuple[bytes, ...]:
    """The call-overhead models at one element and at :data:`OUTPUT_PROBE` elements, in the
    order :func:`timed_call_cost` reads their times."""
    return (*overhead_models(chain), *overhead_models(chain, OUTPUT_PROBE))


def timed_call_cost(times_ms: Sequence[float], chain: int = CHAIN_NODES) -> tuple[float, float]:
    """The call overhead of an isolated model with no output (ms) and its cost per byte of output
    (ms, floored at 0), from the times of :func:`call_cost_models`."""
    if len(times_ms) != 4:
        raise ValueError(f"needs the times of the four call-cost models, got {len(times_ms)}")
    small, large = call_overhead(times_ms[0], times_ms[1], chain), call_overhead(times_ms[2], times_ms[3], chain)
    item = _item_bytes("float")
    per_byte = max(0.0, (large - small) / (item * (OUTPUT_PROBE - 1)))
    return max(0.0, small - item * per_byte), per_byte


def _item_bytes(dtype: str) -> int:
    """Bytes of one element of a profile's tensor type (one of :data:`_TENSOR_TYPES`)."""
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(_TENSOR_TYPES[dtype])).itemsize)


def _bytes(type_shapes: list[Any]) -> int:
    """Bytes of the tensors a profile lists (``[{dtype: shape}, ...]``; their types were checked
    when the one-node model was built)."""
    total = 0
    for ts in type_shapes:
        ((dtype, shape),) = ts.items()
        total += _item_bytes(dtype) * int(np.prod(shape, dtype=np.int64))
    return total


def _compiled_with_shapes(onnx_bytes: bytes, threads: int) -> tuple[onnx.ModelProto, dict[str, tuple[list[Any], list[Any]]]]:
    """The optimized graph and each node's (input, output) type-shapes from one profiled run."""
    with tempfile.TemporaryDirectory(prefix="haq-parts-") as tmp:
        so = session_options(threads)
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        try:
            sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], dtype=np.float32)
            sess.run(None, {inp.name: x})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(f"onnxruntime cannot compile the network: {str(exc).splitlines()[0]}") from exc
        with open(sess.end_profiling(), encoding="utf-8") as fh:
            events = json.load(fh)
        opt = onnx.load(so.optimized_model_filepath)
    shapes: dict[str, tuple[list[Any], list[Any]]] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            args = e.get("args", {})
            shapes[name[: -len("_kernel_time")]] = (args.get("input_type_shape", []), args.get("output_type_shape", []))
    return opt, shapes


def _value_info(name: str, type_shape: dict[str, list[int]]) -> onnx.ValueInfoProto:
    ((dtype, shape),) = type_shape.items()
    if dtype not in _TENSOR_TYPES:
        raise ExportError(f"tensor '{name}' has type {dtype}; one-node models support {', '.join(sorted(_TENSOR_TYPES))}")
    return helper.make_tensor_value_info(name, _TENSOR_TYPES[dtype], shape)


def _with_constants(node: onnx.NodeProto, ins: list[Any], inits: dict[str, onnx.TensorProto]) -> list[Any]:
    """The profile's input type-shapes of ``node``, one per input: onnxruntime leaves out a
    constant it pre-packed (a Gemm's weight), which is then read from the constant itself."""
    names = [n for n in node.input if n]
    if len(names) == len(ins):
        return ins
    out, j = [], 0
    for name in names:
        const = inits.get(name)
        if j < len(ins) and (const is None or list(const.dims) == next(iter(ins[j].values()))):
            out.append(ins[j])
            j += 1
        elif const is not None:
            dtype = next((k for k, v in _TENSOR_TYPES.items() if v == const.data_type), None)
            if dtype is None:
                raise ExportError(f"node '{node.name}' ({node.op_type}): constant '{name}' has a type one-node models lack")
            out.append({dtype: list(const.dims)})
        else:
            break
    if j != len(ins) or len(out) != len(names):
        raise ExportError(f"node '{node.name}' ({node.op_type}): the profile's shapes do not match its inputs / outputs")
    return out


def _one_node_model(
    opt: onnx.ModelProto, node: onnx.NodeProto, ins: list[Any], outs: list[Any], inits: dict[str, onnx.TensorProto]
) -> bytes:
    """``node`` alone: its constants kept, every other input a graph input of its profiled shape."""
    names = [n for n in node.input if n]
    if len(names) != len(ins) or len(node.output) != len(outs):
        raise ExportError(f"node '{node.name}' ({node.op_type}): the profile's shapes do not match its inputs / outputs")
    constants = {name: inits[name] for name in names if name in inits}
    inputs: dict[str, onnx.ValueInfoProto] = {}
    for name, type_shape in zip(names, ins):
        if name not in constants and name not in inputs:
            inputs[name] = _value_info(name, type_shape)
    outputs = [_value_info(name, ts) for name, ts in zip(node.output, outs)]
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    graph = helper.make_graph([copy], "haq_op", list(inputs.values()), outputs, list(constants.values()))
    model = helper.make_model(graph, opset_imports=list(opt.opset_import))
    model.ir_version = opt.ir_version
    return model.SerializeToString()


def _key(node: onnx.NodeProto, ins: list[Any], outs: list[Any]) -> str:
    attrs = sorted((a.name, str(helper.get_attribute_value(a))) for a in node.attribute)
    return json.dumps([node.domain, node.op_type, attrs, ins, outs], separators=(",", ":"))
