"""Analytical cost models of bit-flexible accelerators: Bit Fusion and BISMO.

These price bit widths no CPU runtime really executes. Both are pure functions of a layer
signature, (w_bits, a_bits) and a device configuration whose every constant carries its source
(:meth:`BitFusionConfig.constants`, :meth:`BismoConfig.constants`), so a table can record them.

Bit Fusion (Sharma et al., ISCA 2018): a 16x32 array of fusion units, each 16 2-bit
"BitBricks" that fuse per cycle into one 8x8, four 4x4 / 8x2 or sixteen 2x2 multipliers:
``pf = floor(8 / max(a, 2)) * floor(8 / max(w, 2))`` products per unit per cycle. Operands are
held at the width the bricks consume (``8 / floor(8 / max(b, 2))``: 1-2 → 2, 3-4 → 4, 5-8 → 8
bits), so a 3-bit layer costs exactly what a 4-bit one does, in time and energy.

* compute cycles = ceil(MACs / (units * pf))  (perfect array utilisation, optimistic for
  depthwise layers)
* DRAM bits = weights * w' + 2 * input activations * a'. Partial sums accumulate at 32 bits in
  the on-chip output buffer and are requantized there, so a tensor crosses DRAM twice at its
  consumer's precision: written by its producer, read by its consumer. Both transfers are
  charged to the consumer, whose precision is the one a per-layer table knows. (Charging
  32-bit outputs to DRAM instead would make almost every layer memory-bound on its outputs
  and hide the bit widths from the search.)
* memory cycles = ceil(DRAM bits / interface width); latency = max(compute, memory) / f
  (double-buffered: transfers overlap compute)
* energy = compute cycles * units * core pJ per unit-cycle (idle units clock-gated)
  + DRAM bits * (DRAM + SRAM pJ/bit) (each crosses DRAM and an on-chip buffer once)
  + outputs * 32 * SRAM pJ/bit (partial sums written to the output buffer)

BISMO (Umuroglu et al., FPL 2018): a bit-serial matrix-multiply overlay of ``Dm x Dk x Dn``
binary dot-product units with a fetch / execute / result pipeline; an l-bit x r-bit product
takes l * r binary passes. It runs GEMMs, so convolutions are lowered by im2col on the host
(``M x K`` weights times ``K x N`` activations: M = out channels / groups, K = in channels /
groups * kh * kw, N = output pixels * batch), one GEMM per group. A depthwise conv is packed
block-diagonally instead: ``cb = min(Dm, Dk // (kh * kw))`` channels per GEMM, one per array
row, their windows side by side in one Dk-bit word (zero weights elsewhere). Each bit-plane
row of a matrix occupies ``ceil(K / Dk)`` Dk-bit words, in DRAM and in the tile memories.
A per-layer roofline (:func:`bismo_work`):

* compute cycles = GEMMs * ceil(M / Dm) * ceil(K / Dk) * ceil(N / Dn) * w * a
* read bits per GEMM, weights W = M * words * Dk * w and activations A = N * words * Dk * a:
  W + A when either fits its tile memories (the LHS memories, ``Dm * lhs_depth`` words, hold
  weights, reused across the batch and every output pixel; the RHS memories, ``Dn *
  rhs_depth`` words, hold activations, reused across every output channel); otherwise the
  cheaper of re-streaming A once per weight chunk or W once per activation chunk. Depthwise
  GEMMs share no activations (no cross-channel reuse), so each pays its own A.
* write bits = outputs * a: results are requantized on chip and leave at the activation
  width (this layer's a stands in for the consumer's), on the separate write channel.
* latency = max(compute, read bits / port, write bits / port) / f (the stages overlap).

Which of the two terms binds decides how a layer scales: compute-bound layers scale with
w * a; layers whose activations dominate the port scale with a alone (most depthwise and
early layers at a large batch), weight-dominated ones with w alone (a classifier at a small
N). The cloud instance's port and tile-memory depths are fitted to HAQ's released cloud
table (:mod:`haq.hardware.calibrate_bismo`, ``bench/bismo_calibration.py``); the edge
instance is BISMO's published default build.

BISMO is priced for latency only (the paper reports no energy model). Neither accelerator runs
floating point; float (32-bit) layers are declared unsupported (absent from the table), so the
search never picks them on these devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from haq.core.errors import ConfigError
from haq.core.validate import positive
from haq.quant.discovery import LayerSignature
from haq.quant.primitives import MAX_BITS, MIN_BITS

PSUM_BITS = 32
BITFUSION_SOURCE = "Sharma et al., Bit Fusion, ISCA 2018; public simulator github.com/hsharma35/bitfusion bf_e_conf.ini"


@dataclass(frozen=True)
class Constant:
    """A cost-model constant with its unit and where its value comes from."""

    value: float
    unit: str
    source: str

    def to_dict(self) -> dict[str, float | str]:
        """JSON-ready form stored in a table's ``meta.constants``."""
        return {"value": self.value, "unit": self.unit, "source": self.source}


@dataclass(frozen=True)
class Estimate:
    """Analytical cost of one layer at one precision."""

    latency_ms: float
    energy_mj: float | None
    compute_cycles: int
    memory_cycles: int
    kernel: str


@dataclass(frozen=True)
class BitFusionConfig:
    """Bit Fusion's edge configuration (the paper's 45 nm design point)."""

    rows: int = 16
    cols: int = 32
    freq_hz: float = 500e6
    core_pj_per_unit_cycle: float = 0.56
    if_width_bits: int = 192
    sram_pj_per_bit: float = 0.31
    dram_pj_per_bit: float = 15.0

    def __post_init__(self) -> None:
        for field in ("rows", "cols", "freq_hz", "core_pj_per_unit_cycle", "if_width_bits", "sram_pj_per_bit", "dram_pj_per_bit"):
            positive(f"{type(self).__name__}.{field}", getattr(self, field))

    @property
    def units(self) -> int:
        """Fusion units in the array."""
        return self.rows * self.cols

    def constants(self) -> dict[str, Constant]:
        """Every constant with its source, for the table metadata."""
        return {
            "array_rows": Constant(self.rows, "fusion units", BITFUSION_SOURCE + " (a = 16)"),
            "array_cols": Constant(self.cols, "fusion units", BITFUSION_SOURCE + " (c = 32)"),
            "frequency": Constant(self.freq_hz, "Hz", BITFUSION_SOURCE + " (frequency = 500000000)"),
            "core_energy": Constant(
                self.core_pj_per_unit_cycle, "pJ per fusion unit per cycle", "Bit Fusion, ISCA 2018, 45 nm synthesis (0.56 pJ)"
            ),
            "interface_width": Constant(self.if_width_bits, "bits per cycle", BITFUSION_SOURCE + " (if_width = 192)"),
            "sram_energy": Constant(
                self.sram_pj_per_bit,
                "pJ/bit",
                "Bit Fusion simulator CACTI 45 nm buffers span 0.035-0.31 pJ/bit; upper end taken (64 KiB weight buffer)",
            ),
            "dram_energy": Constant(self.dram_pj_per_bit, "pJ/bit", "Bit Fusion simulator DRAM access energy (15 pJ/bit)"),
            "psum_bits": Constant(
                PSUM_BITS,
                "bits",
                "partial-sum width in the on-chip output buffer (Bit Fusion, ISCA 2018); outputs leave requantized",
            ),
        }


@dataclass(frozen=True)
class BismoConfig:
    """A BISMO overlay instance: array, clock, off-chip port and tile-memory depths.

    ``port_bits`` is the sustained off-chip bits per cycle of each of the read and write
    channels; ``lhs_depth`` / ``rhs_depth`` are the Dk-bit words of each of the ``dm`` LHS
    (weight) and ``dn`` RHS (activation) tile memories, BISMO's ``LMEM`` / ``RMEM``.
    ``sources`` maps "array", "frequency", "port" and "buffers" to where each value comes from.
    """

    name: str
    description: str
    dm: int
    dk: int
    dn: int
    freq_hz: float
    port_bits: float
    lhs_depth: int
    rhs_depth: int
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for field in ("dm", "dk", "dn", "freq_hz", "port_bits", "lhs_depth", "rhs_depth"):
            positive(f"{type(self).__name__}.{field}", getattr(self, field))

    @property
    def weight_buffer_bits(self) -> int:
        """Capacity of the LHS tile memories (weights)."""
        return self.dm * self.lhs_depth * self.dk

    @property
    def act_buffer_bits(self) -> int:
        """Capacity of the RHS tile memories (activations)."""
        return self.dn * self.rhs_depth * self.dk

    def constants(self) -> dict[str, Constant]:
        """Every constant with its source, for the table metadata."""
        src = dict(self.sources)
        buffers = src.get("buffers", "")
        return {
            "dm": Constant(self.dm, "rows of dot-product units", src.get("array", "")),
            "dk": Constant(self.dk, "bits per binary dot product", src.get("array", "")),
            "dn": Constant(self.dn, "columns of dot-product units", src.get("array", "")),
            "frequency": Constant(self.freq_hz, "Hz", src.get("frequency", "")),
            "port_width": Constant(self.port_bits, "bits per cycle, each of the read and write channels", src.get("port", "")),
            "lhs_depth": Constant(self.lhs_depth, f"{self.dk}-bit words in each of {self.dm} weight memories", buffers),
            "rhs_depth": Constant(self.rhs_depth, f"{self.dk}-bit words in each of {self.dn} activation memories", buffers),
        }


def fused_width(bits: int) -> int:
    """Width a Bit Fusion operand occupies: 1-2 → 2, 3-4 → 4, 5-8 → 8."""
    _check_bits(bits)
    return 8 // (8 // max(bits, 2))


def bitfusion_parallelism(w_bits: int, a_bits: int) -> int:
    """Products per fusion unit per cycle: floor(8 / max(a, 2)) * floor(8 / max(w, 2))."""
    _check_bits(w_bits)
    _check_bits(a_bits)
    return (8 // max(a_bits, 2)) * (8 // max(w_bits, 2))


def bitfusion_cost(sig: LayerSignature, w_bits: int, a_bits: int, cfg: BitFusionConfig) -> Estimate:
    """Bit Fusion latency and energy of one layer (see the module docstring for the model)."""
    pf = bitfusion_parallelism(w_bits, a_bits)
    fw, fa = fused_width(w_bits), fused_width(a_bits)
    compute = math.ceil(sig.macs / (cfg.units * pf))
    dram_bits = sig.params * fw + 2 * sig.input_elems * fa
    memory = math.ceil(dram_bits / cfg.if_width_bits)
    cycles = max(compute, memory)
    energy_pj = (
        compute * cfg.units * cfg.core_pj_per_unit_cycle
        + dram_bits * (cfg.dram_pj_per_bit + cfg.sram_pj_per_bit)
        + sig.output_elems * PSUM_BITS * cfg.sram_pj_per_bit
    )
    bound = "compute" if compute >= memory else "memory"
    return Estimate(
        latency_ms=cycles / cfg.freq_hz * 1e3,
        energy_mj=energy_pj * 1e-9,
        compute_cycles=compute,
        memory_cycles=memory,
        kernel=f"bitfusion {fw}x{fa}-bit fused, pf={pf}, {bound}-bound",
    )


def gemm_shape(sig: LayerSignature) -> tuple[int, int, int, int]:
    """(groups, M, K, N) of the layer lowered to GEMMs by im2col."""
    oh, ow = sig.out_hw
    g = sig.groups
    return g, sig.out_channels // g, sig.in_channels // g * sig.kernel[0] * sig.kernel[1], oh * ow * sig.batch


def bismo_lowering(sig: LayerSignature, cfg: BismoConfig) -> tuple[int, int, int, int]:
    """(GEMMs, M, K, N) as BISMO runs the layer: im2col, depthwise packed block-diagonally."""
    g, m, k, n = gemm_shape(sig)
    if sig.op != "dwconv":
        return g, m, k, n
    per_gemm = min(g, max(1, min(cfg.dm, cfg.dk // k)))
    return _ceil_div(g, per_gemm), per_gemm, per_gemm * k, n


@dataclass(frozen=True)
class BismoWork:
    """Work of one layer on BISMO's three overlapping stages, broadcast over the bit widths asked for."""

    compute: npt.NDArray[np.float64]
    read_bits: npt.NDArray[np.float64]
    write_bits: npt.NDArray[np.float64]

    def cycles(self, port_bits: float) -> npt.NDArray[np.float64]:
        """The slowest stage bounds the layer: max(compute, read / port, write / port)."""
        read = np.ceil(self.read_bits / port_bits)
        write = np.ceil(self.write_bits / port_bits)
        return np.maximum(self.compute, np.maximum(read, write))


def bismo_work(sig: LayerSignature, w_bits: npt.ArrayLike, a_bits: npt.ArrayLike, cfg: BismoConfig) -> BismoWork:
    """Compute cycles and bits moved of one layer (see the module docstring); bits may be arrays."""
    w = np.asarray(w_bits, dtype=np.float64)
    a = np.asarray(a_bits, dtype=np.float64)
    gemms, m, k, n = bismo_lowering(sig, cfg)
    words = _ceil_div(k, cfg.dk)
    compute = gemms * _ceil_div(m, cfg.dm) * words * _ceil_div(n, cfg.dn) * w * a
    weights = m * words * cfg.dk * w
    acts = n * words * cfg.dk * a
    stream_acts = weights + acts * np.ceil(weights / cfg.weight_buffer_bits)
    stream_weights = acts + weights * np.ceil(acts / cfg.act_buffer_bits)
    return BismoWork(compute=compute, read_bits=gemms * np.minimum(stream_acts, stream_weights), write_bits=sig.output_elems * a)


def bismo_cost(sig: LayerSignature, w_bits: int, a_bits: int, cfg: BismoConfig) -> Estimate:
    """BISMO bit-serial latency of one layer (see the module docstring for the model)."""
    _check_bits(w_bits)
    _check_bits(a_bits)
    work = bismo_work(sig, w_bits, a_bits, cfg)
    compute = int(work.compute)
    read, write = math.ceil(float(work.read_bits) / cfg.port_bits), math.ceil(float(work.write_bits) / cfg.port_bits)
    memory = max(read, write)
    bound = "compute" if compute >= memory else ("read" if read >= write else "write")
    return Estimate(
        latency_ms=max(compute, memory) / cfg.freq_hz * 1e3,
        energy_mj=None,
        compute_cycles=compute,
        memory_cycles=memory,
        kernel=f"bismo {cfg.dm}x{cfg.dk}x{cfg.dn}, {w_bits}x{a_bits} binary passes, {bound}-bound",
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"analytical accelerator models take bits in {MIN_BITS}..{MAX_BITS}, got {bits!r}")


BISMO_SOURCE = "Umuroglu et al., BISMO, FPL 2018; github.com/EECS-NTNU/bismo"
CALIBRATION_SOURCE = (
    "fitted to HAQ's released MobileNetV2 cloud table (calibration half; haq.hardware.calibrate_bismo, "
    "bench/bismo_calibration.py)"
)

BISMO_EDGE = BismoConfig(
    name="bismo-edge",
    description=(
        "BISMO bit-serial overlay, 2x64x2 at 200 MHz on a PYNQ-Z1-class Zynq-7020 (edge FPGA), default 1024-word tile memories"
    ),
    dm=2,
    dk=64,
    dn=2,
    freq_hz=200e6,
    port_bits=64.0,
    lhs_depth=1024,
    rhs_depth=1024,
    sources=(
        ("array", BISMO_SOURCE + ": default 2x64x2 instance (Makefile M=2 K=64 N=2)"),
        ("frequency", BISMO_SOURCE + ": 200 MHz on PYNQ-Z1 (Makefile FREQ_MHZ=200)"),
        ("port", "fpga-tidbits PYNQZ1 platform: one 64-bit AXI memory port (memDataBits = 64), one beat per cycle"),
        ("buffers", BISMO_SOURCE + ": Makefile LMEM=1024 RMEM=1024 (16 KiB of weights, 16 KiB of activations)"),
    ),
)

BISMO_CLOUD = BismoConfig(
    name="bismo-cloud",
    description=(
        "BISMO bit-serial overlay, 16x256x16 at 300 MHz on a datacenter UltraScale+ FPGA; "
        "off-chip port and tile memories calibrated to HAQ's cloud table"
    ),
    dm=16,
    dk=256,
    dn=16,
    freq_hz=300e6,
    port_bits=268.1,
    lhs_depth=32,
    rhs_depth=64,
    sources=(
        (
            "array",
            "haq choice: 16x256x16 = 39 binary TOPS at 300 MHz, about 2.5x the 15.4 TOPS BISMO reaches on an "
            "Ultra96 (github.com/EECS-NTNU/bismo README); HAQ's cloud table agrees (its depthwise layers cost "
            "channels * N * a / 16, its classifier weights * w / 256)",
        ),
        ("frequency", "haq choice: 300 MHz, a typical UltraScale+ overlay clock"),
        ("port", CALIBRATION_SOURCE),
        ("buffers", CALIBRATION_SOURCE),
    ),
)
