"""Defensive Quantization: the regularizer's value, the fine-tuning routine, and DQ's effect at 4 bits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from haq.core import config as serial
from haq.core.errors import ConfigError, ModelError, UsageError
from haq.data import load_dataset
from haq.evaluation.ptq import quantized_copy
from haq.quant import QuantPolicy, apply_policy_, calibrate_, quant_layers
from haq.robust import (
    AttackConfig,
    DQConfig,
    craft,
    dq_finetune_,
    error_amplification,
    gram_penalty,
    orthogonal_penalty,
    robust_accuracy,
)
from haq.workload import Workload, WorkloadConfig, load_workload


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_penalty_matches_hand_computation() -> None:
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 1.0]])  # 3 x 2: the smaller Gram is WᵀW (2 x 2)
    # WᵀW = [[2, 3], [3, 6]]; minus I = [[1, 3], [3, 5]]; squared sum = 1 + 9 + 9 + 25 = 44
    assert float(gram_penalty(w)) == pytest.approx(44.0)
    assert float(gram_penalty(w.T)) == pytest.approx(44.0)  # 2 x 3: W Wᵀ, the same matrix


def test_penalty_zero_for_orthogonal_and_semi_orthogonal() -> None:
    q = _orthogonal(6, 0)
    assert float(gram_penalty(q)) == pytest.approx(0.0, abs=1e-20)
    rows = q[:2]  # 2 x 6 with orthonormal rows: W Wᵀ = I although Wᵀ W ≠ I
    assert float(gram_penalty(rows)) == pytest.approx(0.0, abs=1e-20)
    assert float(gram_penalty(rows.T)) == pytest.approx(0.0, abs=1e-20)
    assert float(gram_penalty(2 * q)) == pytest.approx(6 * 3.0**2)


def test_conv_kernels_are_reshaped() -> None:
    conv = nn.Conv2d(2, 4, 3, bias=False)  # reshaped 4 x 18: Gram 4 x 4
    with torch.no_grad():
        conv.weight.copy_(_orthogonal(18, 1)[:4].reshape(4, 2, 3, 3).float())
    assert float(gram_penalty(conv.weight.detach())) == pytest.approx(0.0, abs=1e-10)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    lin = model[2].weight
    expected = gram_penalty(conv.weight.detach()) + ((lin @ lin.T) - torch.eye(3)).pow(2).sum().detach()
    assert orthogonal_penalty(model).item() == pytest.approx(expected.item(), rel=1e-6)


def test_penalty_is_differentiable_and_needs_layers() -> None:
    lin = nn.Linear(5, 3)
    orthogonal_penalty(lin).backward()
    assert lin.weight.grad is not None and float(lin.weight.grad.abs().sum()) > 0
    with pytest.raises(ModelError, match="no Conv2d / Linear"):
        orthogonal_penalty(nn.ReLU())


@pytest.mark.parametrize(
    "kwargs, match",
    [({"beta": -1.0}, "beta"), ({"beta": float("nan")}, "beta"), ({"epochs": -1}, "epochs"), ({"lr": 0.0}, "lr"),
     ({"batch_size": 0}, "batch_size"), ({"max_batches": 0}, "max_batches")],
)
def test_bad_dq_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DQConfig(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def mlp(cache_dir: Path, cpu: torch.device) -> Workload:
    return load_workload(WorkloadConfig(model="digits_mlp"), cpu, cache_dir=cache_dir)


def test_uncalibrated_model_is_refused(cpu: torch.device) -> None:
    data = load_dataset("digits")
    model = apply_policy_(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), QuantPolicy.uniform(["1"], 4))
    with pytest.raises(UsageError, match="calibrate"):
        dq_finetune_(model, data, DQConfig(epochs=1), cpu)


def test_finetune_trains_weights_and_alpha_without_leaks(cpu: torch.device) -> None:
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    apply_policy_(model, QuantPolicy.uniform(["1", "3"], 3))
    calibrate_(model, [data.subset("train", 256)[0]], cpu)
    before = orthogonal_penalty(model).item()
    alphas = [float(m.input_quant.alpha) for m in quant_layers(model).values()]
    dq_finetune_(model, data, DQConfig(beta=0.1, epochs=2, lr=3e-3, learn_alpha=True, max_batches=5), cpu)
    assert orthogonal_penalty(model).item() < before
    assert [float(m.input_quant.alpha) for m in quant_layers(model).values()] != alphas
    assert all(not m.input_quant.alpha.requires_grad for m in quant_layers(model).values())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def _evaluate(model: nn.Module, wl: Workload, cpu: torch.device) -> tuple[float, float, list[float]]:
    """Clean accuracy, worst case over white-box and transfer attacks, FGSM amplification per layer."""
    xv, yv = wl.data.subset("val", None)
    xt, yt = wl.data.subset("test", None)
    x, y = torch.cat([xv, xt]), torch.cat([yv, yt])
    cfg = AttackConfig(eps=0.1, pgd_steps=20)
    r = robust_accuracy(model, x, y, ["fgsm", "pgd", "transfer_pgd"], cfg, cpu, wl.data.value_range, wl.model)
    amp = error_amplification(model, x, craft("fgsm", model, x, y, cfg, cpu, wl.data.value_range), cpu)
    return r.clean, r.worst_case, list(amp.values())


def _finetuned(wl: Workload, beta: float, seed: int, cpu: torch.device) -> nn.Module:
    q = quantized_copy(wl.model, QuantPolicy.uniform(wl.layer_names, 4), wl.data, cpu)
    return dq_finetune_(q, wl.data, DQConfig(beta=beta, epochs=10, lr=1e-3, seed=seed), cpu)


def _check_dq_beats_vanilla(wl: Workload, seed: int, cpu: torch.device) -> None:
    clean_v, worst_v, amp_v = _evaluate(_finetuned(wl, 0.0, seed, cpu), wl, cpu)
    clean_d, worst_d, amp_d = _evaluate(_finetuned(wl, 5e-3, seed, cpu), wl, cpu)
    assert abs(clean_d - clean_v) <= 0.01, (clean_v, clean_d)
    assert worst_d > worst_v + 0.05, (worst_v, worst_d)
    mid = len(amp_v) // 2
    for i in (0, mid, len(amp_v) - 1):
        assert amp_d[i] < amp_v[i], (i, amp_v, amp_d)


def test_dq_beats_vanilla_at_4_bits(mlp: Workload, cpu: torch.device) -> None:
    """Same clean accuracy (±1 point), lower amplification at first / middle / last layer,
    higher worst-case robust accuracy: QAT with β = 5e-3 vs β = 0, 10 epochs, ε = 0.1."""
    _check_dq_beats_vanilla(mlp, 0, cpu)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dq_beats_vanilla_at_4_bits_other_seeds(seed: int, mlp: Workload, cpu: torch.device) -> None:
    _check_dq_beats_vanilla(mlp, seed, cpu)


def test_dq_config_round_trips_through_the_generic_serializer() -> None:
    cfg = DQConfig(beta=0.0, epochs=1, learn_alpha=True, max_batches=3)
    assert serial.load(DQConfig, json.loads(json.dumps(serial.dump(cfg)))) == cfg
