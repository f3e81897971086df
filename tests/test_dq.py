"""Defensive Quantization: the regularizer's value, the fine-tuning routine, and DQ's effect at 4 bits."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from haq.core import config as serial
from haq.core.errors import ConfigError, ModelError, UsageError
from haq.data import load_dataset
from haq.data.splits import DataSplits
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
from haq.training import TrainConfig, train_model
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
    [
        ({"beta": -1.0}, r"^DQ beta must be >= 0\.0, got -1\.0$"),
        ({"beta": float("nan")}, "^DQ beta "),
        ({"epochs": -1}, r"^DQ epochs must be an integer >= 0, got -1$"),
        ({"lr": 0.0}, r"^DQ lr must be > 0, got 0\.0$"),
        ({"batch_size": 0}, r"^DQ batch_size must be an integer >= 1, got 0$"),
        ({"max_batches": 0}, r"^DQ max_batches must be an integer >= 1, got 0$"),
    ],
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
    with pytest.raises(
        UsageError,
        match=r"^layer '1' quantizes activations but is not calibrated; "
        r"call haq\.quant\.calibrate_ before dq_finetune_$",
    ):
        dq_finetune_(model, data, DQConfig(epochs=1), cpu)
    weights_only = apply_policy_(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), QuantPolicy.uniform(["1"], 4, 32))
    seen: list[tuple[int, int, float]] = []
    dq_finetune_(weights_only, data, DQConfig(epochs=2, max_batches=2), cpu, progress=lambda *a: seen.append(a))
    assert [(e, n) for e, n, _ in seen] == [(1, 2), (2, 2)]  # float activations need no calibration


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
    after = [float(m.input_quant.alpha) for m in quant_layers(model).values()]
    assert len(after) == len(alphas) == 2 and all(a != b for a, b in zip(after, alphas)), (alphas, after)
    assert all(not m.input_quant.alpha.requires_grad for m in quant_layers(model).values())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def _gram_stats(model: nn.Module) -> list[tuple[float, float, float]]:
    """Per layer: mean |G_ii - 1|, mean |G_ij| and mean |cos| between rows (i != j) of the smaller
    Gram matrix, computed here independently of :func:`gram_penalty`."""
    stats = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double()
            g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            diag = g.diagonal()
            off = g - torch.diag(diag)
            cos = off / torch.sqrt(diag[:, None] * diag[None, :])
            pairs = len(diag) * (len(diag) - 1)
            stats.append((float((diag - 1).abs().mean()), float(off.abs().sum()) / pairs, float(cos.abs().sum()) / pairs))
    return stats


BETA = 0.2
RECIPE = DQConfig(beta=BETA, epochs=5, lr=3e-3, max_batches=30)


def _fresh_4bit_mlp(data: DataSplits, cpu: torch.device) -> nn.Module:
    """A randomly initialised 3-layer MLP under W4A4 (row norms² ≈ 1/3, so G's diagonal starts far from 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    apply_policy_(model, QuantPolicy.uniform(["1", "3", "5"], 4))
    calibrate_(model, [data.subset("train", 256)[0]], cpu)
    return model


def _weight_decay_arm(model: nn.Module, data: DataSplits, cpu: torch.device, gram: bool) -> nn.Module:
    """The DQ recipe with the penalty pulling towards 0 instead of towards orthogonality, at equal β:
    (β/2)·Σ‖G‖² (``gram``) or plain weight decay (β/2)·Σ‖W‖²."""

    def decay(m: nn.Module) -> torch.Tensor:
        ws = [x.weight for x in m.modules() if isinstance(x, nn.Linear)]
        terms = [((w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w) if gram else w).pow(2).sum() for w in ws]
        return 0.5 * BETA * torch.stack(terms).sum()

    recipe = TrainConfig(
        epochs=RECIPE.epochs,
        lr=RECIPE.lr,
        batch_size=RECIPE.batch_size,
        weight_decay=0.0,
        seed=RECIPE.seed,
        threads=None,
        max_batches=RECIPE.max_batches,
    )
    return train_model(model, data, recipe, cpu, extra_loss=decay)


def test_dq_orthogonalizes_where_weight_decay_only_shrinks(cpu: torch.device) -> None:
    """Same start, data order and β: DQ moves each layer's Gram diagonal towards 1 and its
    off-diagonal towards 0; the weight-decay arms shrink the diagonal towards 0 instead."""
    data = load_dataset("digits")
    start = _fresh_4bit_mlp(data, cpu)
    before = _gram_stats(start)
    dq = _gram_stats(dq_finetune_(copy.deepcopy(start), data, RECIPE, cpu))
    gram_decay = _gram_stats(_weight_decay_arm(copy.deepcopy(start), data, cpu, gram=True))
    l2_decay = _gram_stats(_weight_decay_arm(copy.deepcopy(start), data, cpu, gram=False))
    for (d0, o0, c0), (d, o, c), (dg, _, cg), (dl, _, cl) in zip(before, dq, gram_decay, l2_decay):
        assert d < 0.5 * d0, (before, dq)  # the diagonal moves towards 1 ...
        assert dg > d0 and dl > d0, (before, gram_decay, l2_decay)  # ... where weight decay moves it away
        assert d < 0.5 * min(dg, dl), (dq, gram_decay, l2_decay)
        assert o < o0, (before, dq)  # the off-diagonal moves towards 0 ...
        assert c < 0.75 * min(cg, cl), (dq, gram_decay, l2_decay)  # ... rows decorrelate, not just shrink


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


def test_dq_loss_is_cross_entropy_plus_half_beta_times_the_penalty(cpu: torch.device) -> None:
    """dq_finetune_ is exactly the plain training recipe with (β/2)·Σ‖G − I‖² added (the penalty
    recomputed here by hand), step for step; with learn_alpha off the clips do not move."""
    data = load_dataset("digits")
    start = _fresh_4bit_mlp(data, cpu)
    cfg = DQConfig(beta=0.05, epochs=2, lr=2e-3, batch_size=32, max_batches=6, seed=3)
    alphas = [float(m.input_quant.alpha) for m in quant_layers(start).values()]
    dq = dq_finetune_(copy.deepcopy(start), data, cfg, cpu)

    def by_hand(m: nn.Module) -> torch.Tensor:
        terms = []
        for lin in (x for x in m.modules() if isinstance(x, nn.Linear)):
            w = lin.weight
            g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            terms.append((g - torch.eye(len(g))).pow(2).sum())
        return 0.5 * cfg.beta * torch.stack(terms).sum()

    recipe = TrainConfig(epochs=2, lr=2e-3, batch_size=32, weight_decay=0.0, seed=3, threads=None, max_batches=6)
    reference = train_model(copy.deepcopy(start), data, recipe, cpu, extra_loss=by_hand)
    for a, b in zip(dq.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(next(dq.parameters()), next(start.parameters()))
    assert [float(m.input_quant.alpha) for m in quant_layers(dq).values()] == alphas
    assert all(not m.input_quant.alpha.requires_grad for m in quant_layers(dq).values())
    assert not dq.training
    plain = dq_finetune_(copy.deepcopy(start), data, dataclasses.replace(cfg, beta=0.0), cpu)
    vanilla = train_model(copy.deepcopy(start), data, recipe, cpu)
    for a, b in zip(plain.parameters(), vanilla.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_penalty_of_a_vector_and_of_tall_matrices() -> None:
    v = torch.tensor([3.0, 4.0])  # a single row: G = [25]
    assert float(gram_penalty(v)) == pytest.approx(24.0**2)
    tall = torch.tensor([[1.0], [1.0], [1.0]])  # 3 x 1: the smaller Gram is WᵀW = [3]
    assert float(gram_penalty(tall)) == pytest.approx(4.0)
    assert float(gram_penalty(tall.T)) == pytest.approx(4.0)
    with pytest.raises(ModelError, match=r"^model ReLU has no Conv2d / Linear weight to regularize$"):
        orthogonal_penalty(nn.ReLU())
