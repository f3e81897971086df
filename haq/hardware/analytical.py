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
binary dot-product units; an l-bit x r-bit product takes l * r binary passes. Convolutions are
lowered by im2col to GEMMs ``M x K`` times ``K x N`` (M = out channels / groups, K = in
channels / groups * kh * kw, N = output pixels * batch), one GEMM per group (a depthwise conv
is ``groups`` GEMMs with M = 1, which wastes most of the array, as it would on BISMO):

* compute cycles = groups * ceil(M / Dm) * ceil(K / Dk) * ceil(N / Dn) * w * a
* memory cycles = ceil((weights * w + input activations * a + outputs * 32) / interface width)
  (im2col is done on chip from the fetched input, results written as 32-bit accumulators)
* latency = max(compute, memory) / f (BISMO's fetch / execute / result stages overlap)

BISMO is priced for latency only (the paper reports no energy model). Neither accelerator runs
floating point; float (32-bit) layers are declared unsupported (absent from the table), so the
search never picks them on these devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from haq.core.errors import ConfigError
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
        _positive(self, ("rows", "cols", "freq_hz", "core_pj_per_unit_cycle", "if_width_bits", "sram_pj_per_bit", "dram_pj_per_bit"))

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
            "core_energy": Constant(self.core_pj_per_unit_cycle, "pJ per fusion unit per cycle", "Bit Fusion, ISCA 2018, 45 nm synthesis (0.56 pJ)"),
            "interface_width": Constant(self.if_width_bits, "bits per cycle", BITFUSION_SOURCE + " (if_width = 192)"),
            "sram_energy": Constant(self.sram_pj_per_bit, "pJ/bit", "Bit Fusion simulator CACTI 45 nm buffers span 0.035-0.31 pJ/bit; upper end taken (64 KiB weight buffer)"),
            "dram_energy": Constant(self.dram_pj_per_bit, "pJ/bit", "Bit Fusion simulator DRAM access energy (15 pJ/bit)"),
            "psum_bits": Constant(PSUM_BITS, "bits", "partial-sum width in the on-chip output buffer (Bit Fusion, ISCA 2018); outputs leave requantized"),
        }


@dataclass(frozen=True)
class BismoConfig:
    """A BISMO overlay instance: array shape ``dm x dk x dn``, clock and DRAM interface."""

    name: str
    description: str
    dm: int
    dk: int
    dn: int
    freq_hz: float
    if_width_bits: int
    sources: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        _positive(self, ("dm", "dk", "dn", "freq_hz", "if_width_bits"))

    def constants(self) -> dict[str, Constant]:
        """Every constant with its source, for the table metadata."""
        src = dict(self.sources)
        return {
            "dm": Constant(self.dm, "rows of dot-product units", src.get("array", "")),
            "dk": Constant(self.dk, "bits per binary dot product", src.get("array", "")),
            "dn": Constant(self.dn, "columns of dot-product units", src.get("array", "")),
            "frequency": Constant(self.freq_hz, "Hz", src.get("frequency", "")),
            "interface_width": Constant(self.if_width_bits, "bits per cycle", src.get("interface", "")),
            "psum_bits": Constant(PSUM_BITS, "bits", "BISMO accumulators are 32-bit and written back as such"),
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


def bismo_cost(sig: LayerSignature, w_bits: int, a_bits: int, cfg: BismoConfig) -> Estimate:
    """BISMO bit-serial latency of one layer (see the module docstring for the model)."""
    _check_bits(w_bits)
    _check_bits(a_bits)
    g, m, k, n = gemm_shape(sig)
    compute = g * _ceil_div(m, cfg.dm) * _ceil_div(k, cfg.dk) * _ceil_div(n, cfg.dn) * w_bits * a_bits
    bits_moved = sig.params * w_bits + sig.input_elems * a_bits + sig.output_elems * PSUM_BITS
    memory = math.ceil(bits_moved / cfg.if_width_bits)
    bound = "compute" if compute >= memory else "memory"
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


def _positive(cfg: object, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{type(cfg).__name__}.{n} must be a positive finite number, got {v!r}")


BISMO_EDGE = BismoConfig(
    name="bismo-edge",
    description="BISMO bit-serial overlay, 2x64x2 at 200 MHz on a PYNQ-Z1-class Zynq-7020 (edge FPGA)",
    dm=2, dk=64, dn=2, freq_hz=200e6, if_width_bits=64,
    sources=(
        ("array", "Umuroglu et al., BISMO, FPL 2018: default 2x64x2 instance"),
        ("frequency", "BISMO, FPL 2018: 200 MHz on PYNQ-Z1"),
        ("interface", "one 64-bit Zynq-7020 AXI HP port per cycle (1.6 GB/s at 200 MHz); haq modelling choice"),
    ),
)

BISMO_CLOUD = BismoConfig(
    name="bismo-cloud",
    description="BISMO bit-serial overlay, 16x256x16 at 300 MHz on a datacenter UltraScale+ FPGA (e.g. VU9P, one DDR4 channel)",
    dm=16, dk=256, dn=16, freq_hz=300e6, if_width_bits=512,
    sources=(
        ("array", "haq choice: 16x256x16 = 39 binary TOPS at 300 MHz, about 2.5x the 15.4 TOPS BISMO reaches on an Ultra96 (github.com/EECS-NTNU/bismo README), for a larger datacenter FPGA"),
        ("frequency", "haq choice: 300 MHz, a typical UltraScale+ overlay clock"),
        ("interface", "haq choice: one 512-bit DDR4-2400 channel port per cycle (19.2 GB/s at 300 MHz)"),
    ),
)
