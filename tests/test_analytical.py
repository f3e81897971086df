"""Analytical accelerator models: hand-computed cases, properties (positive, monotone, pf steps) and
the BISMO cloud calibration against HAQ's released table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haq.core.errors import ConfigError, TableError
from haq.hardware.analytical import (
    BISMO_CLOUD,
    BISMO_EDGE,
    BismoConfig,
    BitFusionConfig,
    bismo_cost,
    bismo_lowering,
    bismo_work,
    bitfusion_cost,
    bitfusion_parallelism,
    fused_width,
    gemm_shape,
)
from haq.hardware.calibrate_bismo import (
    CURVE_TOLERANCE,
    CalibrationLayer,
    figures,
    fit_cloud,
    load_calibration,
    model_costs,
    sensitivity,
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
    # rows of 3 64-bit words per bit-plane: weights 32*3*64*4, activations 64*3*64*2 bits, both fit
    # the 2*1024*64-bit tile memories, so each crosses the 64-bit port once
    assert est.memory_cycles == (32 * 3 * 64 * 4 + 64 * 3 * 64 * 2) // 64
    assert est.latency_ms == pytest.approx(1536 * 8 / 200e6 * 1e3)
    assert est.energy_mj is None and "compute-bound" in est.kernel


def test_bismo_reuse_follows_the_tile_memories() -> None:
    """Activations re-stream per weight chunk (or weights per activation chunk) once neither fits."""
    big = LayerSignature("conv", 512, 512, (1, 1), (1, 1), (0, 0), 1, 32, 32, False, 4)  # 512x512 weights, N = 4096
    roomy = BismoConfig("roomy", "", 2, 64, 2, 200e6, 1.0, 1 << 16, 1 << 16)  # a 1-bit port: memory-bound
    tight = BismoConfig("tight", "", 2, 64, 2, 200e6, 1.0, 64, 64)
    weights, acts = 512 * 512 * 8, 4096 * 512 * 8
    assert float(bismo_work(big, 8, 8, roomy).read_bits) == weights + acts
    tight_bits = float(bismo_work(big, 8, 8, tight).read_bits)
    w_chunks, a_chunks = -(-weights // tight.weight_buffer_bits), -(-acts // tight.act_buffer_bits)
    assert tight_bits == min(weights + acts * w_chunks, acts + weights * a_chunks)
    assert bismo_cost(big, 8, 8, tight).latency_ms > bismo_cost(big, 8, 8, roomy).latency_ms


def test_bismo_depthwise_is_packed_block_diagonally() -> None:
    assert gemm_shape(DW) == (16, 1, 9, 64)
    assert bismo_lowering(DW, BISMO_EDGE) == (8, 2, 18, 64)  # 2 channels per GEMM: one per array row
    assert bismo_lowering(DW, BISMO_CLOUD) == (1, 16, 144, 64)  # all 16 channels' windows in one 256-bit word
    assert bismo_cost(DW, 1, 1, BISMO_EDGE).compute_cycles == 8 * 1 * 1 * 32


def test_bismo_array_views_match_scalar_costs() -> None:
    bits = np.arange(1, 9)
    for sig in (CONV, DW, FC):
        for cfg in (BISMO_EDGE, BISMO_CLOUD):
            grid = bismo_work(sig, bits[:, None], bits[None, :], cfg).cycles(cfg.port_bits)
            for w in BITS:
                for a in BITS:
                    ms = grid[w - 1, a - 1] / cfg.freq_hz * 1e3
                    assert ms == pytest.approx(bismo_cost(sig, w, a, cfg).latency_ms, rel=1e-12)


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
        return LayerSignature(
            "linear",
            draw(st.integers(1, 600)),
            draw(st.integers(1, 600)),
            (1, 1),
            (1, 1),
            (0, 0),
            1,
            draw(st.integers(1, 4)),
            1,
            draw(st.booleans()),
            batch,
        )
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
        BismoConfig("x", "", 2, 0, 2, 200e6, 64.0, 1024, 1024)
    with pytest.raises(ConfigError, match="rhs_depth"):
        BismoConfig("x", "", 2, 64, 2, 200e6, 64.0, 1024, 0)
    with pytest.raises(ConfigError, match="freq_hz"):
        BitFusionConfig(freq_hz=float("nan"))


def test_every_constant_has_a_source() -> None:
    for consts in (BF.constants(), BISMO_EDGE.constants(), BISMO_CLOUD.constants()):
        for name, c in consts.items():
            assert c.source, name


def test_bismo_edge_is_the_published_default_build() -> None:
    assert (BISMO_EDGE.dm, BISMO_EDGE.dk, BISMO_EDGE.dn, BISMO_EDGE.freq_hz, BISMO_EDGE.port_bits) == (2, 64, 2, 200e6, 64.0)
    assert BISMO_EDGE.weight_buffer_bits == BISMO_EDGE.act_buffer_bits == 16 * 1024 * 8  # LMEM = RMEM = 1024 words


# ---------------------------------------------------------------- calibration against HAQ's cloud table


@pytest.fixture(scope="module")
def calibration() -> list[CalibrationLayer]:
    return load_calibration()


def test_calibration_file_is_the_even_half_of_mobilenetv2(calibration: list[CalibrationLayer]) -> None:
    assert [layer.index for layer in calibration] == list(range(0, 53, 2))
    assert all(layer.signature.batch == 16 for layer in calibration)
    first, last = calibration[0].signature, calibration[-1].signature
    assert (first.op, first.in_h, first.out_hw) == ("conv", 224, (112, 112))
    assert (last.op, last.in_channels, last.out_channels) == ("linear", 1280, 1000)


def test_reference_layers_are_memory_bound_where_haq_says(calibration: list[CalibrationLayer]) -> None:
    """The data itself: depthwise layers scale with a (not w), the classifier with w (not a)."""
    for layer in calibration:
        s = sensitivity(layer.cost)
        if layer.signature.op == "dwconv":
            assert s.w1a8 > 0.85 and s.w8a1 < 0.35
        if layer.signature.op == "linear":
            assert s.w8a1 > 0.99 and s.w1a8 < 0.13


def test_calibrated_cloud_reproduces_curve_and_ratios(calibration: list[CalibrationLayer]) -> None:
    model = figures(model_costs(BISMO_CLOUD, [layer.signature for layer in calibration]))
    ref = figures(np.stack([layer.cost for layer in calibration]))
    for b, (m, r) in enumerate(zip(model.curve, ref.curve), start=1):
        assert abs(m - r) <= CURVE_TOLERANCE, f"{b}/{b}: model {m:.3f} vs HAQ {r:.3f}"
    assert abs(model.w8a4 - ref.w8a4) <= CURVE_TOLERANCE
    assert abs(model.w4a8 - ref.w4a8) <= CURVE_TOLERANCE
    assert model.w8a4 < model.w4a8  # activation bits matter more, as in HAQ's table


def test_calibrated_cloud_depthwise_ignores_w_and_classifier_ignores_a(calibration: list[CalibrationLayer]) -> None:
    for layer, cost in zip(calibration, model_costs(BISMO_CLOUD, [layer.signature for layer in calibration])):
        s = sensitivity(cost)
        if layer.signature.op == "dwconv":
            assert s.w1a8 > 0.95 and s.w8a1 < 0.2, f"layer {layer.index}: {s}"
            assert np.all(cost[-1, :] <= 1.15 * cost[0, :]), f"layer {layer.index}: depthwise cost moves with w"
        if layer.signature.op == "linear":
            assert s.w8a1 > 0.95 and s.w1a8 < 0.2, f"layer {layer.index}: {s}"
            assert np.all(cost[:, -1] <= 1.15 * cost[:, 0]), f"layer {layer.index}: classifier cost moves with a"


def test_fit_recovers_the_shipped_cloud_constants(calibration: list[CalibrationLayer]) -> None:
    fit = fit_cloud(calibration)
    got = (fit.config.port_bits, fit.config.lhs_depth, fit.config.rhs_depth)
    assert got == (BISMO_CLOUD.port_bits, BISMO_CLOUD.lhs_depth, BISMO_CLOUD.rhs_depth)
    assert fit.model.max_gap(fit.reference) <= CURVE_TOLERANCE
    assert 0.9 < fit.units_per_cycle < 1.2  # HAQ's units behave like cycles of this array


def test_malformed_calibration_file_is_a_table_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"network": "x, batch 16", "layers": [{"index": 0, "op": "conv", "cost": [[1]]}]}))
    with pytest.raises(TableError, match="cannot read calibration table"):
        load_calibration(bad)
    with pytest.raises(TableError, match="cannot read calibration table"):
        load_calibration(tmp_path / "missing.json")
