"""Golden quantizer numbers: integer codes and scales at 2, 4 and 8 bits, worked out by hand,
per output channel and per tensor, and equal to what the ONNX exporter writes into the QDQ graph.

The hand-worked values pin the grid itself (``2^(b-1) - 1`` levels each side for weights,
``2^b - 1`` unsigned / ``2^(b-1) - 1`` signed for activations), so an off-by-one in a level
count fails here on every bit width, independently of the property tests in test_primitives.py.
No input sits on a rounding tie.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from haq.export import ExportOptions, export_policy
from haq.export.qdq import ActQuant, quantize_weight_codes
from haq.quant import LayerBits, QuantPolicy, apply_policy_, calibrate_, discover_layers, quant_layers
from haq.quant.primitives import activation_levels, quantize_activation, quantize_weight, sqnr_db, weight_scale

W = torch.tensor([[0.70, -0.40, 0.10, 0.00], [-2.00, 1.10, 0.55, 0.30]])

# bits -> (scale per row, codes): per output channel, row maxima 0.7 and 2.0 over qmax = 1, 7, 127.
PER_CHANNEL = {
    2: ([0.7 / 1, 2.0 / 1], [[1, -1, 0, 0], [-1, 1, 0, 0]]),  # 0.275 and 0.15 round to 0
    4: ([0.7 / 7, 2.0 / 7], [[7, -4, 1, 0], [-7, 4, 2, 1]]),  # 1.1 * 3.5 = 3.85, 0.55 * 3.5 = 1.925
    8: ([0.7 / 127, 2.0 / 127], [[127, -73, 18, 0], [-127, 70, 35, 19]]),  # -0.4 * 181.43 = -72.57
}
# Per tensor: one scale from the largest magnitude, 2.0.
PER_TENSOR = {
    2: (2.0 / 1, [[0, 0, 0, 0], [-1, 1, 0, 0]]),
    4: (2.0 / 7, [[2, -1, 0, 0], [-7, 4, 2, 1]]),  # 0.7 * 3.5 = 2.45, -0.4 * 3.5 = -1.4
    8: (2.0 / 127, [[44, -25, 6, 0], [-127, 70, 35, 19]]),  # 0.7 * 63.5 = 44.45
}

X = torch.tensor([-0.3, 0.0, 0.2, 0.49, 0.77, 1.0, 1.4])
# bits -> codes of X on [0, 1] (steps 1/3, 1/15, 1/255) and on [-1, 1] (steps 1, 1/7, 1/127).
UNSIGNED = {2: [0, 0, 1, 1, 2, 3, 3], 4: [0, 0, 3, 7, 12, 15, 15], 8: [0, 0, 51, 125, 196, 255, 255]}
SIGNED = {2: [0, 0, 0, 0, 1, 1, 1], 4: [-2, 0, 1, 3, 5, 7, 7], 8: [-38, 0, 25, 62, 98, 127, 127]}
LEVELS = {(2, False): 3, (4, False): 15, (8, False): 255, (2, True): 1, (4, True): 7, (8, True): 127}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_channel_weight_codes_and_scales(bits: int) -> None:
    scales, codes = PER_CHANNEL[bits]
    expected_scale = torch.tensor(scales)[:, None]
    scale = weight_scale(W, bits, per_channel=True)
    torch.testing.assert_close(scale, expected_scale)
    q = quantize_weight(W, bits)  # per channel is the default
    torch.testing.assert_close(q, torch.tensor(codes, dtype=torch.float32) * expected_scale)
    assert torch.round(q / scale).to(torch.int64).tolist() == codes
    assert all(len(torch.unique(row)) <= 2 * (2 ** (bits - 1) - 1) + 1 for row in q)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_per_tensor_weight_codes_and_scales(bits: int) -> None:
    scale_value, codes = PER_TENSOR[bits]
    scale = weight_scale(W, bits, per_channel=False)
    assert scale.shape == () and float(scale) == pytest.approx(scale_value, rel=1e-6)
    q = quantize_weight(W, bits, per_channel=False)
    torch.testing.assert_close(q, torch.tensor(codes, dtype=torch.float32) * scale_value)
    assert torch.round(q / scale).to(torch.int64).tolist() == codes


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_exporter_arithmetic_writes_the_same_codes(bits: int) -> None:
    """The exporter's integer codes: per channel as its rows, per tensor as one flattened row."""
    scales, codes = PER_CHANNEL[bits]
    got_codes, got_scale = quantize_weight_codes(W.numpy(), bits)
    np.testing.assert_array_equal(got_codes, codes)
    np.testing.assert_allclose(got_scale, scales, rtol=1e-6)
    scale_value, tensor_codes = PER_TENSOR[bits]
    flat_codes, flat_scale = quantize_weight_codes(W.numpy().reshape(1, -1), bits)
    np.testing.assert_array_equal(flat_codes.reshape(W.shape), tensor_codes)
    np.testing.assert_allclose(flat_scale, [scale_value], rtol=1e-6)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_activation_codes(bits: int, signed: bool) -> None:
    levels = LEVELS[(bits, signed)]
    assert activation_levels(bits, signed) == levels
    codes = (SIGNED if signed else UNSIGNED)[bits]
    q = quantize_activation(X, bits, 1.0, signed)
    torch.testing.assert_close(q, torch.tensor(codes, dtype=torch.float32) / levels)
    grid = ActQuant(alpha=1.0, signed=signed, bits=bits)
    assert float(grid.scale) == pytest.approx(1.0 / levels, rel=1e-7)
    assert grid.zero_point == (128 if signed else 0)


def _tiny() -> nn.Module:
    """Conv -> ReLU -> Linear with fixed weights (a seeded draw) on 1 x 4 x 4 inputs."""
    gen = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def _initializers(onnx_bytes: bytes) -> dict[str, np.ndarray]:
    graph = onnx.load_from_string(onnx_bytes).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_qdq_graph_holds_the_fake_quantizers_grids(bits: int) -> None:
    """Weight codes, weight scales, input scales and zero points in the exported graph equal the
    fake-quantized torch model's, layer by layer (narrow grids in an 8-bit container)."""
    model = _tiny()
    layers = discover_layers(model, (1, 4, 4))
    names = [layer.name for layer in layers]
    policy = QuantPolicy({n: LayerBits(bits, bits) for n in names})
    calib = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    exported = export_policy(model, layers, policy, (1, 4, 4), calib, ExportOptions(emulated=bits != 8))
    inits = _initializers(exported.onnx_bytes)
    fake = apply_policy_(_tiny(), policy)
    calibrate_(fake, [calib], torch.device("cpu"))
    for name, layer in quant_layers(fake).items():
        w = layer.weight.detach()
        scale = weight_scale(w, bits).reshape(-1)
        codes = torch.round(quantize_weight(w, bits) / weight_scale(w, bits)).to(torch.int64)
        stored = inits[f"haq/{name}/w_q"]
        assert stored.dtype == np.uint8  # the default container: uint8 at zero point 128, the same grid
        zero = inits[f"haq/{name}/w_zero_point"]
        assert zero.dtype == np.uint8 and np.all(zero == 128)
        centred = stored.astype(np.int64) - 128
        in_axis = centred if centred.shape == tuple(w.shape) else centred.T  # Gemm keeps (in, out) unless transB
        np.testing.assert_array_equal(in_axis, codes.numpy())
        np.testing.assert_allclose(inits[f"haq/{name}/w_scale"], scale.numpy(), rtol=1e-6)
        assert int(np.abs(centred).max()) == 2 ** (bits - 1) - 1
        alpha, signed = float(layer.input_quant.alpha), bool(layer.input_quant.signed)
        in_scale = inits[f"haq/{name}/in/scale"]
        assert float(in_scale) == pytest.approx(alpha / activation_levels(bits, signed), rel=1e-6)
        assert int(inits[f"haq/{name}/in/zero_point"]) == (128 if signed else 0)


def test_one_bit_weights_are_sign_times_mean_magnitude() -> None:
    """1 bit: sign (zero counts as +) times the mean |w| of the row, or of the whole tensor."""
    row_means = torch.tensor([[1.2 / 4], [3.95 / 4]])  # |0.7| + |-0.4| + |0.1| + 0, and 2 + 1.1 + 0.55 + 0.3
    signs = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(weight_scale(W, 1), row_means)
    torch.testing.assert_close(quantize_weight(W, 1), signs * row_means)
    torch.testing.assert_close(quantize_weight(W, 1, per_channel=False), signs * (5.15 / 8))
    codes, scale = quantize_weight_codes(W.numpy(), 1)
    np.testing.assert_array_equal(codes, signs.numpy())
    np.testing.assert_allclose(scale, row_means.reshape(-1).numpy(), rtol=1e-6)


def test_sqnr_in_decibels() -> None:
    x = torch.ones(10)
    assert sqnr_db(x, 0.9 * x) == pytest.approx(20.0)  # noise power 1 % of the signal
    assert sqnr_db(x, 0.99 * x) == pytest.approx(40.0)
    assert sqnr_db(x, x.clone()) == float("inf")
    assert sqnr_db(torch.full((4,), 2.0), torch.full((4,), 1.5)) == pytest.approx(10 * np.log10(16.0))  # noise exactly 1


def test_one_dimensional_weights_share_one_scale() -> None:
    v = torch.tensor([1.0, 0.3, -0.6])
    torch.testing.assert_close(quantize_weight(v, 2), torch.tensor([1.0, 0.0, -1.0]))  # scale 1, not one per element
    assert weight_scale(v, 2).shape == ()


def test_one_bit_signed_activations_are_plus_or_minus_alpha() -> None:
    torch.testing.assert_close(quantize_activation(X, 1, 1.5, signed=True), torch.tensor([-1.5, 1.5, 1.5, 1.5, 1.5, 1.5, 1.5]))
    torch.testing.assert_close(quantize_activation(X, 1, 1.5, signed=False), torch.tensor([0.0, 0.0, 0.0, 0.0, 1.5, 1.5, 1.5]))


def test_double_precision_inputs_keep_their_precision() -> None:
    x = torch.linspace(-0.05, 0.15, 41, dtype=torch.float64)
    step = 0.1 / 15
    expected = torch.round(x.clamp(0.0, 0.1) / step) * step
    torch.testing.assert_close(quantize_activation(x, 4, 0.1, signed=False), expected, rtol=0, atol=1e-15)
