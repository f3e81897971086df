"""Rewrite a float ONNX graph so each layer runs at the precision its :class:`LayerPlan` names.

* W8A8: the weight becomes an int8 initializer behind a per-channel DequantizeLinear, the bias
  int32 at scale ``s_in * s_w``, the input passes a Q/DQ pair at the layer's calibrated clip, and
  the layer's output (after a fused ReLU / Clip) gets a Q/DQ pair too — without it onnxruntime
  cannot form QLinearConv. That output pair reuses the consumer's input scale when every
  consumer is an 8-bit layer, so a chain of int8 layers carries exactly one pair per edge.
* Weight-only: a Gemm / MatMul becomes ``MatMulNBits`` (blockwise, ``accuracy_level=4``), with
  the symmetric per-channel grid of the fake-quantized layer stored on unsigned codes.
* Emulated: the asked grid is stored in the nearest container the runtime has (int8 QDQ, or a
  wider MatMulNBits for weight-only linear layers); activation grids narrower than 8 bits get a
  Clip so the values equal the fake-quantized model's.

Quantization arithmetic mirrors :mod:`haq.quant.primitives` (float32, round half to even).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from haq.export.float_graph import LayerNode
from haq.export.plan import WEIGHT_ONLY_BITS, ExportError, LayerPlan, Realization
from haq.quant import FLOAT_BITS

MATMUL_NBITS_BLOCK = 32
EPILOGUE_OPS = ("Relu", "Clip")
MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class ActQuant:
    """A calibrated activation grid: clip ``alpha``, signedness and bit width."""

    alpha: float
    signed: bool
    bits: int

    @property
    def scale(self) -> np.float32:
        """Step of the grid, computed as the fake-quantizer does."""
        levels = max(2 ** (self.bits - 1) - 1, 1) if self.signed else 2**self.bits - 1
        return np.float32(max(self.alpha, 1e-8)) / np.float32(levels)

    @property
    def zero_point(self) -> int:
        """uint8 zero point: 0 for an unsigned grid, 128 for a signed one.

        Every activation uses a uint8 container: onnxruntime fuses a QDQ conv only when its
        input and output share a type, and u8 x s8 is the fast VNNI path. A signed grid of
        ``k * step`` (|k| <= 127) fits exactly at zero point 128.
        """
        return 128 if self.signed else 0


def weight_container(codes: np.ndarray, signed: bool) -> tuple[np.ndarray, int]:
    """Symmetric weight codes (|k| <= 127) as stored behind their DequantizeLinear, and the zero point.

    Unsigned (``k + 128`` at zero point 128, the same grid) unless ``signed``: onnxruntime runs a
    uint8 x int8 product on x86 CPUs without VNNI (AVX2) by adding pairs of products in 16 bits,
    which saturates once both are near 255 x 127 (the digits CNN at W8A8 was 9 % of its largest
    logit off the fake-quantized model on an AVX2 EPYC, 0.08 % with uint8 weights, whose product
    onnxruntime widens first); int8 weights are faster where VNNI or AMX adds in 32 bits.
    """
    if signed:
        return codes.astype(np.int8), 0
    return (codes.astype(np.int16) + 128).astype(np.uint8), 128


def layer_outputs(proto: onnx.ModelProto, nodes: Sequence[LayerNode], plans: Mapping[str, LayerPlan]) -> dict[str, str]:
    """For each W8A8 layer, the tensor after its fused epilogue that gets an output Q/DQ pair.

    A Gemm / MatMul whose output is a graph output is left out (QGemm / MatMulIntegerToFloat
    return float); a conv's graph output gets the pair, since QLinearConv needs an output scale.
    """
    consumers = _consumers(proto)
    graph_outputs = {o.name for o in proto.graph.output}
    out: dict[str, str] = {}
    for ln in nodes:
        if plans[ln.name].realization != Realization.W8A8:
            continue
        tensor = proto.graph.node[ln.node_index].output[0]
        while len(consumers.get(tensor, [])) == 1 and tensor not in graph_outputs:
            nxt = proto.graph.node[consumers[tensor][0][0]]
            if nxt.op_type not in EPILOGUE_OPS:
                break
            tensor = nxt.output[0]
        if tensor not in graph_outputs or ln.op_type == "Conv":
            out[ln.name] = tensor
    return out


class _Edits:
    """Nodes and initializers added to a graph, and the grid of every DequantizeLinear made."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.dq_grid: dict[str, tuple[float, int]] = {}  # DQ output -> (scale, zero point)

    def init(self, name: str, arr: np.ndarray) -> str:
        """Add an initializer; returns its name."""
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs: int) -> str:
        """Add a one-output node; returns the output's name."""
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output

    def qdq_pair(self, tensor: str, prefix: str, q: ActQuant, out_name: str | None = None) -> str:
        """Quantize / dequantize ``tensor`` on ``q``'s grid (with a Clip when narrower than 8 bits)."""
        scale = self.init(f"{prefix}/scale", np.asarray(q.scale, dtype=np.float32))
        zp = self.init(f"{prefix}/zero_point", np.asarray(q.zero_point, dtype=np.uint8))
        if q.bits < 8:
            lo = self.init(f"{prefix}/clip_lo", np.asarray(-q.alpha if q.signed else 0.0, dtype=np.float32))
            hi = self.init(f"{prefix}/clip_hi", np.asarray(q.alpha, dtype=np.float32))
            tensor = self.node("Clip", [tensor, lo, hi], f"{prefix}/clipped", f"{prefix}/Clip")
        qt = self.node("QuantizeLinear", [tensor, scale, zp], f"{prefix}/q", f"{prefix}/QuantizeLinear")
        dq = self.node("DequantizeLinear", [qt, scale, zp], out_name or f"{prefix}/dq", f"{prefix}/DequantizeLinear")
        self.dq_grid[dq] = (float(q.scale), q.zero_point)
        return dq

    def dequantized(self, prefix: str, codes: np.ndarray, scale: np.ndarray, axis: int, zero_point: int = 0) -> str:
        """An integer initializer (uint8, int8 or int32) behind a per-channel DequantizeLinear."""
        q = self.init(f"{prefix}_q", codes)
        s = self.init(f"{prefix}_scale", scale.astype(np.float32))
        z = self.init(f"{prefix}_zero_point", np.full(scale.shape, zero_point, dtype=codes.dtype))
        return self.node("DequantizeLinear", [q, s, z], f"{prefix}_dq", f"{prefix}/DequantizeLinear", axis=axis)


def rewrite(
    proto: onnx.ModelProto,
    nodes: Sequence[LayerNode],
    plans: Mapping[str, LayerPlan],
    act: Mapping[str, ActQuant],
    ranges: Mapping[str, tuple[float, float]],
    fenced: frozenset[str] = frozenset(),
    signed_weights: bool = False,
) -> onnx.ModelProto:
    """A new model in which every layer follows its plan (``proto`` is not modified); the 8-bit
    containers' weight codes are stored as :func:`weight_container` says.

    ``fenced`` float layers get ``Max(x, lowest float)`` on their input: numerically the identity,
    but it stops onnxruntime from quantizing a float conv that sits between int8 layers (its
    optimizer removes Identity, ``Mul 1`` and ``Add 0``, not this).
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    layer_node = {ln.name: g.node[ln.node_index] for ln in nodes}
    edits = _Edits()

    consumers = _consumers(model)
    graph_outputs = {o.name for o in g.output}
    for name, tensor in layer_outputs(model, nodes, plans).items():
        q = _output_quant(tensor, consumers, g, layer_node, plans, act, ranges)
        if tensor in graph_outputs:  # keep the graph output's name on the final DequantizeLinear
            producer = next(n for n in g.node if tensor in n.output)
            producer.output[list(producer.output).index(tensor)] = f"haq/{name}/out/float"
            edits.qdq_pair(f"haq/{name}/out/float", f"haq/{name}/out", q, out_name=tensor)
            continue
        dq = edits.qdq_pair(tensor, f"haq/{name}/out", q)
        for idx, pos in consumers.get(tensor, []):
            g.node[idx].input[pos] = dq

    for ln in nodes:
        plan, node = plans[ln.name], layer_node[ln.name]
        prefix = f"haq/{ln.name}"
        if plan.realization == Realization.FLOAT:
            if ln.name in fenced:
                low = edits.init(f"{prefix}/fence/lowest", np.asarray(np.finfo(np.float32).min, dtype=np.float32))
                node.input[0] = edits.node("Max", [node.input[0], low], f"{prefix}/fence/out", f"{prefix}/fence/Max")
            continue
        weight = numpy_helper.to_array(inits[ln.weight]).astype(np.float32)
        bias = numpy_helper.to_array(inits[ln.bias]).astype(np.float32) if ln.bias else None
        axis = _channel_axis(node)
        emulated_weight_only = (
            plan.realization == Realization.EMULATED and plan.op == "linear" and plan.a_bits == FLOAT_BITS and plan.w_bits < 8
        )
        if plan.realization == Realization.WEIGHT_ONLY or emulated_weight_only:
            _to_matmul_nbits(node, ln, plan, weight, axis, bias, edits)
            continue
        s_in: np.float32 | None = None
        if plan.activations_quantized:
            q_in = act[ln.name]
            s_in = q_in.scale
            if edits.dq_grid.get(node.input[0]) != (float(q_in.scale), q_in.zero_point) or q_in.bits < 8:
                node.input[0] = edits.qdq_pair(node.input[0], f"{prefix}/in", q_in)
        if plan.w_bits == FLOAT_BITS:
            continue
        codes, w_scale = quantize_weight_codes(np.moveaxis(weight, axis, 0), plan.w_bits)
        stored, w_zero = weight_container(np.moveaxis(codes, 0, axis), signed_weights)
        node.input[1] = edits.dequantized(f"{prefix}/w", stored, w_scale, axis, w_zero)
        if bias is not None and s_in is not None:
            b_scale = (s_in * w_scale).astype(np.float32)
            node.input[2] = edits.dequantized(f"{prefix}/b", quantize_bias(bias, b_scale), b_scale, 0)

    g.initializer.extend(edits.inits)
    nodes_all = list(g.node) + edits.nodes
    del g.node[:]
    g.node.extend(_topological(nodes_all, {i.name for i in g.input} | {t.name for t in g.initializer}))
    used = {name for n in g.node for name in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    if any(n.domain == MS_DOMAIN for n in g.node) and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def _output_quant(
    tensor: str,
    consumers: dict[str, list[tuple[int, int]]],
    g: onnx.GraphProto,
    layer_node: Mapping[str, onnx.NodeProto],
    plans: Mapping[str, LayerPlan],
    act: Mapping[str, ActQuant],
    ranges: Mapping[str, tuple[float, float]],
) -> ActQuant:
    """The consumers' shared 8-bit input grid if they all have one, else the calibrated range."""
    by_node = {id(n): name for name, n in layer_node.items()}
    grids = set()
    for idx, pos in consumers.get(tensor, []):
        name = by_node.get(id(g.node[idx]))
        if name is None or pos != 0 or plans[name].realization != Realization.W8A8:
            grids = set()
            break
        grids.add(act[name])
    if len(grids) == 1:
        return grids.pop()
    if tensor not in ranges:
        raise ExportError(f"no calibrated range for tensor '{tensor}'; pass calibration inputs to the exporter")
    lo, hi = ranges[tensor]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ExportError(f"calibrated range of tensor '{tensor}' is not finite ({lo}, {hi}); check the calibration inputs")
    signed = lo < 0.0
    return ActQuant(alpha=max(abs(lo), abs(hi)) if signed else hi, signed=signed, bits=8)


def _to_matmul_nbits(
    node: onnx.NodeProto, ln: LayerNode, plan: LayerPlan, weight: np.ndarray, axis: int, bias: np.ndarray | None, edits: _Edits
) -> None:
    """Turn a Gemm / MatMul into MatMulNBits (+ Add for the bias) in place."""
    prefix = f"haq/{ln.name}"
    w_nk = np.moveaxis(weight, axis, 0)  # [N, K]
    container = next(b for b in WEIGHT_ONLY_BITS if b >= plan.w_bits)
    packed, scales = pack_matmul_nbits(w_nk, plan.w_bits, container, MATMUL_NBITS_BLOCK)
    edits.init(f"{prefix}/w_packed", packed)
    edits.init(f"{prefix}/w_scales", scales)
    out = node.output[0]
    mm_out = f"{prefix}/matmul" if bias is not None else out
    attrs = dict(K=int(w_nk.shape[1]), N=int(w_nk.shape[0]), bits=container, block_size=MATMUL_NBITS_BLOCK, accuracy_level=4)
    a = node.input[0]
    node.Clear()
    node.CopyFrom(
        helper.make_node(
            "MatMulNBits",
            [a, f"{prefix}/w_packed", f"{prefix}/w_scales"],
            [mm_out],
            name=f"{prefix}/MatMulNBits",
            domain=MS_DOMAIN,
            **attrs,
        )
    )
    if bias is not None:
        edits.node("Add", [mm_out, edits.init(f"{prefix}/bias", bias)], out, f"{prefix}/bias/Add")


def _channel_axis(node: onnx.NodeProto) -> int:
    """Axis of the output channels in the node's weight initializer."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return 0 if attrs.get("transB", 0) else 1
    return 1


def _consumers(model: onnx.ModelProto) -> dict[str, list[tuple[int, int]]]:
    out: dict[str, list[tuple[int, int]]] = {}
    for i, n in enumerate(model.graph.node):
        for pos, name in enumerate(n.input):
            if name:
                out.setdefault(name, []).append((i, pos))
    return out


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Kahn's order; new nodes were appended at the end and must move before their consumers."""
    ready = set(available)
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all((not i) or i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError(f"rewritten graph has a cycle or a dangling input at node '{rest[0].name}'")
        pending = rest
    return ordered


# ---- pure numerics -------------------------------------------------------------------------


def quantize_weight_codes(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel (axis 0) integer codes and scales, as the fake-quantizer rounds.

    1 bit: sign (zero → +1) at the mean magnitude; b ≥ 2: ``2^(b-1) - 1`` levels each side.
    """
    flat = np.abs(w.reshape(w.shape[0], -1)).astype(np.float32)
    if bits == 1:
        scale = np.maximum(flat.mean(axis=1), np.float32(1e-12)).astype(np.float32)
        codes = np.where(w >= 0, 1, -1).astype(np.int32)
        return codes, scale
    qmax = 2 ** (bits - 1) - 1
    scale = np.maximum(flat.max(axis=1) / np.float32(qmax), np.float32(1e-12)).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    codes = np.round(np.clip(w.astype(np.float32) / shaped, -qmax, qmax)).astype(np.int32)
    return codes, scale


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 bias on the accumulator grid ``s_in * s_w``."""
    return np.clip(np.round(bias.astype(np.float64) / scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)


def pack_matmul_nbits(w_nk: np.ndarray, grid_bits: int, bits: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits layout: codes + 2^(bits-1) (the default zero point), packed low bits first.

    Returns ``B`` of shape [N, k_blocks, block * bits / 8] (uint8) and scales [N * k_blocks];
    K is padded with the zero-point code, so padding contributes nothing.
    """
    n, k = w_nk.shape
    codes, scale = quantize_weight_codes(w_nk, grid_bits)
    k_blocks = -(-k // block)
    zp = 2 ** (bits - 1)
    padded = np.full((n, k_blocks * block), zp, dtype=np.int64)
    padded[:, :k] = codes + zp
    per_byte = 8 // bits
    grouped = padded.reshape(n, k_blocks, block // per_byte, per_byte)
    shifts = (np.arange(per_byte) * bits).astype(np.int64)
    packed = np.bitwise_or.reduce(grouped << shifts, axis=-1).astype(np.uint8)
    scales = np.repeat(scale, k_blocks).astype(np.float32)
    return packed, scales
