"""Which onnxruntime CPU kernel realizes each layer of a policy, decided before any graph is built.

onnxruntime's CPU provider really executes only three things for conv / linear layers: float
(fp32 weights and activations), W8A8 through QDQ pairs that its optimizer fuses into
QLinearConv / QLinearMatMul / QGemm, and weight-only 2/4/8-bit linear layers through the
``MatMulNBits`` contrib op. Every other (w_bits, a_bits) pair would load and run, but as
"dequantize, then a float kernel" — slower than fp32 — so it is refused unless the caller asks
for an *emulated* export, in which case the narrower grid is stored in an 8-bit container and
the layer is labelled emulated wherever it is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from haq.core.errors import HaqError
from haq.quant import FLOAT_BITS, LayerSignature

WEIGHT_ONLY_BITS = (2, 4, 8)


class ExportError(HaqError):
    """A model or policy cannot be exported, or the exported graph does not run the policy."""


class Realization(str, Enum):
    """How a layer runs on the CPU provider."""

    FLOAT = "fp32"
    W8A8 = "w8a8"
    WEIGHT_ONLY = "weight_only"
    EMULATED = "emulated"


@dataclass(frozen=True)
class LayerPlan:
    """The realization chosen for one layer and the bits it was asked for."""

    name: str
    op: str
    w_bits: int
    a_bits: int
    realization: Realization

    @property
    def activations_quantized(self) -> bool:
        """Whether the layer's input passes through a QuantizeLinear / DequantizeLinear pair."""
        return self.realization in (Realization.W8A8, Realization.EMULATED) and self.a_bits != FLOAT_BITS

    @property
    def precision(self) -> str:
        """Short label used as a table key: ``fp32``, ``w8a8``, ``w4a32`` ..."""
        if self.realization == Realization.FLOAT:
            return "fp32"
        return f"w{self.w_bits}a{self.a_bits}"


def realizable(op: str, w_bits: int, a_bits: int) -> Realization | None:
    """The real kernel for ``op`` at these bits, or ``None`` when the CPU provider has none."""
    if w_bits == FLOAT_BITS and a_bits == FLOAT_BITS:
        return Realization.FLOAT
    if w_bits == 8 and a_bits == 8:
        return Realization.W8A8
    if op == "linear" and a_bits == FLOAT_BITS and w_bits in WEIGHT_ONLY_BITS:
        return Realization.WEIGHT_ONLY
    return None


def supported_precisions(op: str) -> list[tuple[int, int]]:
    """Every (w_bits, a_bits) pair the CPU provider really runs for a layer kind."""
    pairs = [(FLOAT_BITS, FLOAT_BITS), (8, 8)]
    if op == "linear":
        pairs += [(b, FLOAT_BITS) for b in WEIGHT_ONLY_BITS]
    return pairs


def plan_layer(name: str, sig: LayerSignature, w_bits: int, a_bits: int, allow_emulated: bool) -> LayerPlan:
    """Choose the realization of one layer, refusing bits the CPU cannot run unless emulation is asked."""
    real = realizable(sig.op, w_bits, a_bits)
    if real is None:
        if not allow_emulated:
            valid = ", ".join(f"w{w}a{a}" for w, a in supported_precisions(sig.op))
            raise ExportError(
                f"layer '{name}' ({sig.op}) asks for w{w_bits}a{a_bits}, which onnxruntime's CPU provider "
                f"cannot run natively (valid: {valid}); pass emulated=True (--emulate) to export it on an 8-bit grid container"
            )
        real = Realization.EMULATED
    return LayerPlan(name, sig.op, w_bits, a_bits, real)
