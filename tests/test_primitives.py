"""Numeric properties of the quantization primitives: error bounds, SQNR, STE gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from haq.core.errors import ModelError, PolicyError, UsageError
from haq.quant.primitives import (
    FLOAT_BITS,
    activation_levels,
    check_bits,
    quantize_activation,
    quantize_weight,
    sqnr_db,
    weight_scale,
)
from haq.quant.quantizers import InputQuantizer, WeightQuantizer

BITS = list(range(1, 9))


def _weights(seed: int, shape: tuple[int, ...] = (16, 8, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("per_channel", [True, False])
def test_weight_sqnr_rises_with_bits(per_channel: bool) -> None:
    w = _weights(0)
    sqnr = [sqnr_db(w, quantize_weight(w, b, per_channel)) for b in BITS]
    assert all(b > a for a, b in zip(sqnr[1:], sqnr[2:])), sqnr
    assert sqnr[-1] > 35.0  # 8-bit: ~6 dB per bit above the 2-bit level


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8))
def test_weight_error_within_half_step(seed: int, bits: int) -> None:
    w = _weights(seed, (6, 5))
    q = quantize_weight(w, bits, per_channel=True)
    step = weight_scale(w, bits, per_channel=True)
    assert torch.all((q - w).abs() <= step / 2 + 1e-6)
    levels = torch.round(q / step)
    assert levels.abs().max() <= 2 ** (bits - 1) - 1


def test_per_channel_beats_per_tensor_on_skewed_weights() -> None:
    w = _weights(1, (8, 32))
    w[0] *= 50.0  # one channel with a much larger range, as after BN folding
    for bits in (2, 4, 8):
        pc, pt = quantize_weight(w, bits, True), quantize_weight(w, bits, False)
        # The outlier channel swamps a whole-tensor SQNR; the ordinary channels are what suffers.
        assert sqnr_db(w[1:], pc[1:]) > sqnr_db(w[1:], pt[1:]) + 3.0
        assert sqnr_db(w, pc) >= sqnr_db(w, pt)


def test_one_bit_weights_are_binary_and_finite() -> None:
    w = _weights(2, (4, 10))
    w[1] = 0.0  # an all-zero channel must not divide by zero
    q = quantize_weight(w, 1)
    assert torch.isfinite(q).all()
    for c in (0, 2, 3):
        assert len(torch.unique(q[c].abs())) == 1
        assert torch.equal(torch.sign(q[c]), torch.where(w[c] >= 0, 1.0, -1.0))


def test_float_bits_is_identity() -> None:
    w = _weights(3)
    assert quantize_weight(w, FLOAT_BITS) is w
    assert quantize_activation(w, FLOAT_BITS, 1.0, signed=True) is w


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", BITS)
def test_activation_grid(bits: int, signed: bool) -> None:
    x = torch.linspace(-2.0, 2.0, 2001)
    q = quantize_activation(x, bits, 1.5, signed)
    distinct = torch.unique(q)
    expected = 2 * activation_levels(bits, signed) + 1 if signed else activation_levels(bits, signed) + 1
    if signed and bits == 1:
        expected = 2
    assert len(distinct) == expected
    assert q.min() >= (-1.5 if signed else 0.0) - 1e-6 and q.max() <= 1.5 + 1e-6


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8))
def test_activation_error_bound_inside_range(seed: int, bits: int) -> None:
    x = torch.rand(200, generator=torch.Generator().manual_seed(seed)) * 3.0
    q = quantize_activation(x, bits, 3.0, signed=False)
    step = 3.0 / (2**bits - 1)
    assert torch.all((q - x).abs() <= step / 2 + 1e-5)


def test_activation_sqnr_rises_with_bits() -> None:
    x = torch.rand(4096, generator=torch.Generator().manual_seed(4))
    s = [sqnr_db(x, quantize_activation(x, b, 1.0, signed=False)) for b in BITS]
    assert all(b > a for a, b in zip(s, s[1:])), s


def test_ste_gradients() -> None:
    x = torch.tensor([-0.5, 0.2, 0.7, 1.5], requires_grad=True)
    quantize_activation(x, 4, 1.0, signed=False).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))  # 1 inside the clip, 0 outside

    w = torch.randn(3, 4, requires_grad=True)
    quantize_weight(w, 3).sum().backward()
    assert w.grad is not None and torch.allclose(w.grad, torch.ones_like(w))


def test_learned_alpha_gets_gradient() -> None:
    alpha = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([0.3, 2.0])
    quantize_activation(x, 4, alpha, signed=False).sum().backward()
    assert alpha.grad is not None and math.isfinite(float(alpha.grad)) and float(alpha.grad) != 0.0


@pytest.mark.parametrize("bad", [0, 9, 16, -1, 2.0, True, "8", None])
def test_bad_bits_rejected(bad: object) -> None:
    with pytest.raises(PolicyError, match="bits"):
        check_bits(bad)


def test_bits_check_names_the_value_and_the_valid_range() -> None:
    with pytest.raises(PolicyError, match=r"layer 'fc': a_bits=9 is out of range; use 1\.\.8 or 32"):
        check_bits(9, "layer 'fc': a_bits")
    with pytest.raises(PolicyError, match=r"write 4\)"):
        check_bits(4.0, "w_bits")
    with pytest.raises(PolicyError, match=r"use 1\.\.8$"):
        check_bits(32, "bits", allow_float=False)
    assert check_bits(32) == 32 and check_bits(1, allow_float=False) == 1
    with pytest.raises(PolicyError, match="w_bits"):
        quantize_weight(torch.ones(2, 2), 9)


def test_errors_name_weight_or_activation_bits() -> None:
    w = torch.ones(2, 2)
    for bad_weight in (lambda: quantize_weight(w, 9), lambda: weight_scale(w, 0), lambda: quantize_weight(w, 9, False)):
        with pytest.raises(PolicyError, match=r"^w_bits=\d is out of range; use 1\.\.8 or 32 \(float\)$"):
            bad_weight()
    for bad_act in (lambda: quantize_activation(w, 9, 1.0, False), lambda: activation_levels(0, True)):
        with pytest.raises(PolicyError, match=r"^a_bits=\d is out of range; use 1\.\.8 or 32 \(float\)$"):
            bad_act()
    with pytest.raises(PolicyError, match=r"^bits must be an integer in 1\.\.8 or 32 \(float\), got 2\.5$"):
        check_bits(2.5)
    with pytest.raises(PolicyError, match=r"^bits=0 is out of range"):
        check_bits(0)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_grid_has_two_to_the_bits_minus_one_levels_each_side(bits: int) -> None:
    """A dense ramp hits every level of the symmetric grid and nothing else: 2·(2^(b-1) - 1) + 1 values."""
    w = torch.linspace(-1.0, 1.0, 4001)[None, :]
    q = quantize_weight(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert len(torch.unique(q)) == 2 * qmax + 1
    assert float(q.max()) == pytest.approx(1.0) and float(weight_scale(w, bits)) == pytest.approx(1.0 / qmax)


def test_weight_quantizer_module() -> None:
    w = torch.tensor([[0.7, -0.4, 0.1, 0.0], [-2.0, 1.1, 0.55, 0.3]])
    assert torch.equal(WeightQuantizer(4)(w), quantize_weight(w, 4, per_channel=True))  # per channel by default
    assert torch.equal(WeightQuantizer(4, per_channel=False)(w), quantize_weight(w, 4, per_channel=False))
    assert not torch.equal(WeightQuantizer(4)(w), WeightQuantizer(4, per_channel=False)(w))
    wq = WeightQuantizer()
    assert wq(w) is w and wq.bits == FLOAT_BITS
    wq.bits = 2
    assert wq.bits == 2 and "bits=2, per_channel=True" == wq.extra_repr()
    with pytest.raises(PolicyError, match=r"^w_bits=9 is out of range"):
        WeightQuantizer(9)
    with pytest.raises(PolicyError, match=r"^w_bits=0 is out of range"):
        wq.bits = 0


def test_input_quantizer_module() -> None:
    q = InputQuantizer(4, layer="fc")
    assert not q.alpha.requires_grad and InputQuantizer(4, learn_alpha=True).alpha.requires_grad
    assert q.signed.dtype == torch.bool and q.calibrated.dtype == torch.bool  # checkpoint format
    assert not bool(q.signed) and not bool(q.calibrated) and float(q.alpha) == 1.0
    assert "bits=4, learn_alpha=False" == q.extra_repr()
    x = torch.tensor([-0.5, 0.25, 1.5])
    with pytest.raises(
        UsageError,
        match=r"^layer 'fc' quantizes activations to 4 bits but was never calibrated; "
        r"call haq\.quant\.calibrate_\(model, batches\) first$",
    ):
        q(x)
    with pytest.raises(ModelError, match=r"^layer 'fc' saw no input during calibration; the model's forward\(\) never calls it$"):
        q.commit_observed()
    with pytest.raises(ModelError, match="layer '' saw no input"):
        InputQuantizer(4).commit_observed()
    q.start_observing()
    assert torch.equal(q(x), x) and torch.equal(q(2 * x), 2 * x)  # observed, passed through unquantized
    q.stop_observing()
    q.commit_observed()
    assert bool(q.calibrated) and bool(q.signed) and float(q.alpha) == 3.0  # max(|-1.0|, 3.0)
    torch.testing.assert_close(q(x), quantize_activation(x, 4, 3.0, signed=True))
    q.start_observing()
    q(torch.tensor([0.0, 0.5]))  # a fresh range: unsigned, clip at 0.5
    q.stop_observing()
    q.commit_observed()
    assert not bool(q.signed) and float(q.alpha) == 0.5
    q.start_observing()
    q(torch.tensor([-2.0, 0.5]))  # signed, and the negative side is the wider one
    q.stop_observing()
    q.commit_observed()
    assert bool(q.signed) and float(q.alpha) == 2.0
    with pytest.raises(PolicyError, match=r"^a_bits=9 is out of range"):
        InputQuantizer(9)
    with pytest.raises(PolicyError, match=r"^a_bits=0 is out of range"):
        q.bits = 0
    q.bits = FLOAT_BITS
    assert q(x) is x and q.bits == FLOAT_BITS
