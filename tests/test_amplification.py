"""Error amplification and Lipschitz estimates against hand computations and exact SVDs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from haq.core.errors import ConfigError, DataError, ModelError
from haq.quant import QuantPolicy, apply_policy_, calibrate_
from haq.quant.layers import QuantLinear
from haq.robust import error_amplification, lipschitz_estimates, spectral_norm
from haq.robust.amplification import relative_perturbation

CPU = torch.device("cpu")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(8, 8), (5, 17), (40, 3), (64, 256)])
def test_power_iteration_matches_svd(shape: tuple[int, int]) -> None:
    w = torch.randn(shape, generator=_gen(sum(shape)))
    exact = float(torch.linalg.svdvals(w.double())[0])
    assert spectral_norm(w, iters=500) == pytest.approx(exact, rel=1e-4)


def test_power_iteration_edge_cases() -> None:
    assert spectral_norm(torch.zeros(3, 4)) == 0.0
    assert spectral_norm(torch.eye(5) * 3.0) == pytest.approx(3.0)
    with pytest.raises(ModelError, match="2-D"):
        spectral_norm(torch.zeros(2, 3, 4))
    with pytest.raises(ConfigError, match="iters"):
        spectral_norm(torch.eye(2), iters=0)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_lipschitz_estimates_per_layer_reshaped_and_quantized() -> None:
    net = _net()
    est = lipschitz_estimates(net, iters=500)
    assert list(est) == ["0", "3"]
    assert est["0"] == pytest.approx(float(torch.linalg.svdvals(net[0].weight.detach().flatten(1).double())[0]), rel=1e-4)
    apply_policy_(net, QuantPolicy.uniform(["0", "3"], 2, 32))
    q = lipschitz_estimates(net, iters=500)
    head = net[3]
    assert isinstance(head, QuantLinear)
    exact = float(torch.linalg.svdvals(head.quantized_weight().detach().double())[0])
    assert q["3"] == pytest.approx(exact, rel=1e-4) and q["3"] != pytest.approx(est["3"], rel=1e-3)


def test_identity_layer_ratio_is_hand_computed() -> None:
    lin = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(3))
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    delta = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    amp = error_amplification(lin, x, x + delta, CPU)
    assert amp == {"": pytest.approx((1.0 + 2.0) / (5.0 + 1.0))}


def test_ratios_in_execution_order_zero_without_perturbation() -> None:
    net = _net()
    x = torch.rand(16, 1, 8, 8, generator=_gen(0))
    assert error_amplification(net, x, x.clone(), CPU) == {"0": 0.0, "3": 0.0}
    noisy = (x + 0.05 * torch.randn(x.shape, generator=_gen(1))).clamp(0, 1)
    amp = error_amplification(net, x, noisy, CPU, batch_size=5)
    assert list(amp) == ["0", "3"] and all(0 < v < 1 for v in amp.values())


def test_quantized_layers_and_no_state_leak() -> None:
    net = _net()
    apply_policy_(net, QuantPolicy.uniform(["0", "3"], 2))
    x = torch.rand(32, 1, 8, 8, generator=_gen(2))
    calibrate_(net, [x], CPU)
    net.train()
    amp = error_amplification(net, x, (x + 0.1).clamp(0, 1), CPU)
    assert set(amp) == {"0", "3"}
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters() if p.dim() > 0)


def test_aggregation_survives_all_zero_activations() -> None:
    assert relative_perturbation(0.0, 0.0) == 0.0
    assert relative_perturbation(1.0, 0.0) == math.inf
    assert relative_perturbation(1.0, 4.0) == 0.25


def test_bad_amplification_inputs() -> None:
    net = _net()
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(DataError, match="shape"):
        error_amplification(net, x, x[:2], CPU)
    with pytest.raises(DataError, match="at least one"):
        error_amplification(net, x[:0], x[:0], CPU)
    with pytest.raises(ModelError, match="no Conv2d"):
        error_amplification(nn.ReLU(), x, x, CPU)
