"""Analytical accelerator models: hand-computed cases and properties (positive, monotone, pf steps)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haq.core.errors import ConfigError
from haq.hardware.analytical import (
    BISMO_CLOUD,
    BISMO_EDGE,
    BismoConfig,
    BitFusionConfig,
    bismo_cost,
    bitfusion_cost,
    bitfusion_parallelism,
    fused_width,
    gemm_shape,
)
from haq.quant import LayerSignature

BF = BitFusionConfig()
BITS = range(1, 9)

CONV = LayerSignature("conv", 16, 32, (3, 3), (1, 1), (1, 1), 1, 8, 8, True)
DW = LayerSignature("dwconv", 16, 16, (3, 3), (1, 1), (1, 1), 16, 8, 8, False)
FC = LayerSignature("linear", 512, 10, (1, 1), (1, 1), (0, 0), 1, 1, 1, True)


def test_bitfusion_parallelism_table() -> None:
    assert bitfusion_parallelism(8, 8) == 1
    assert bitfusion_parallelism(4, 4) == 4
    assert bitfusion_parallelism(2, 2) == 16
    assert bitfusion_parallelism(8, 2) == 4
    assert bitfusion_parallelism(1, 1) == 16  # 1-bit runs at 2-bit speed
    assert [fused_width(b) for b in BITS] == [2, 2, 4, 4, 8, 8, 8, 8]


def test_bitfusion_hand_computed_8bit() -> None:
    # MACs = 32*16*9*64 = 294912; compute = 294912 / 512 = 576 cycles
    # DRAM bits = 4608 weights * 8 + 2 * 1024 inputs * 8 = 53248 -> ceil(/192) = 278 cycles
    est = bitfusion_cost(CONV, 8, 8, BF)
    assert (est.compute_cycles, est.memory_cycles) == (576, 278)
    assert est.latency_ms == pytest.approx(576 / 500e6 * 1e3)
    core = 576 * 512 * 0.56
    memory = 53248 * (15.0 + 0.31)
    psums = 2048 * 32 * 0.31
    assert est.energy_mj == pytest.approx((core + memory + psums) * 1e-9)
    assert "compute-bound" in est.kernel


def test_bitfusion_hand_computed_2bit_is_memory_bound() -> None:
    # pf = 16 -> compute = 294912 / 8192 = 36; bits = 4608*2 + 2*1024*2 = 13312 -> 70 cycles
    est = bitfusion_cost(CONV, 2, 2, BF)
    assert (est.compute_cycles, est.memory_cycles) == (36, 70)
    assert est.latency_ms == pytest.approx(70 / 500e6 * 1e3)
    assert "memory-bound" in est.kernel


def test_bismo_hand_computed() -> None:
    # im2col: M=32, K=144, N=64 -> ceil(32/2)*ceil(144/64)*ceil(64/2) = 16*3*32 = 1536 per bit pair
    assert gemm_shape(CONV) == (1, 32, 144, 64)
    est = bismo_cost(CONV, 4, 2, BISMO_EDGE)
    assert est.compute_cycles == 1536 * 8
    assert est.memory_cycles == (4608 * 4 + 1024 * 2 + 2048 * 32) // 64
    assert est.latency_ms == pytest.approx(1536 * 8 / 200e6 * 1e3)
    assert est.energy_mj is None


def test_bismo_depthwise_is_one_gemm_per_group() -> None:
    assert gemm_shape(DW) == (16, 1, 9, 64)
    assert bismo_cost(DW, 1, 1, BISMO_EDGE).compute_cycles == 16 * 1 * 1 * 32


@pytest.mark.parametrize("w", [3, 5, 6, 7])
def test_bitfusion_pf_steps(w: int) -> None:
    """3-bit costs exactly what 4-bit does, 5-7 what 8-bit does, in latency and energy."""
    up = 4 if w == 3 else 8
    for sig in (CONV, DW, FC):
        for other in BITS:
            assert bitfusion_cost(sig, w, other, BF) == bitfusion_cost(sig, up, other, BF)
            assert bitfusion_cost(sig, other, w, BF) == bitfusion_cost(sig, other, up, BF)


@st.composite
def signatures(draw: st.DrawFn) -> LayerSignature:
    op = draw(st.sampled_from(["conv", "dwconv", "linear"]))
    batch = draw(st.integers(1, 4))
    if op == "linear":
        return LayerSignature("linear", draw(st.integers(1, 600)), draw(st.integers(1, 600)), (1, 1), (1, 1), (0, 0), 1,
                              draw(st.integers(1, 4)), 1, draw(st.booleans()), batch)
    k = draw(st.sampled_from([1, 3, 5]))
    s = draw(st.integers(1, 2))
    hw = draw(st.integers(k, 40))
    cin = draw(st.integers(1, 96))
    cout = cin if op == "dwconv" else draw(st.integers(1, 96))
    return LayerSignature(op, cin, cout, (k, k), (s, s), (k // 2, k // 2), cin if op == "dwconv" else 1, hw, hw, False, batch)


@settings(max_examples=60, deadline=None)
@given(sig=signatures(), w=st.integers(1, 8), a=st.integers(1, 8))
def test_costs_positive_and_monotone(sig: LayerSignature, w: int, a: int) -> None:
    for fn, cfg in ((bitfusion_cost, BF), (bismo_cost, BISMO_EDGE), (bismo_cost, BISMO_CLOUD)):
        here = fn(sig, w, a, cfg)  # type: ignore[operator]
        assert here.latency_ms > 0 and math.isfinite(here.latency_ms)
        for nw, na in ((min(w + 1, 8), a), (w, min(a + 1, 8))):
            more = fn(sig, nw, na, cfg)  # type: ignore[operator]
            assert more.latency_ms >= here.latency_ms
            if here.energy_mj is not None:
                assert here.energy_mj > 0 and more.energy_mj >= here.energy_mj


def test_bismo_cloud_is_faster_than_edge() -> None:
    for sig in (CONV, DW, FC):
        assert bismo_cost(sig, 4, 4, BISMO_CLOUD).latency_ms < bismo_cost(sig, 4, 4, BISMO_EDGE).latency_ms


@pytest.mark.parametrize("bits", [0, 9, 32, -1])
def test_bits_out_of_range(bits: int) -> None:
    with pytest.raises(ConfigError, match="1..8"):
        bitfusion_cost(CONV, bits, 8, BF)
    with pytest.raises(ConfigError, match="1..8"):
        bismo_cost(CONV, 8, bits, BISMO_EDGE)


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dk"):
        BismoConfig("x", "", 2, 0, 2, 200e6, 64)
    with pytest.raises(ConfigError, match="freq_hz"):
        BitFusionConfig(freq_hz=float("nan"))


def test_every_constant_has_a_source() -> None:
    for consts in (BF.constants(), BISMO_EDGE.constants(), BISMO_CLOUD.constants()):
        for name, c in consts.items():
            assert c.source, name
