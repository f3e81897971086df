"""Attacks and the worst-case evaluator: trustworthy numbers, no leaked state, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from haq.core import config as serial
from haq.core.errors import ConfigError, DataError
from haq.evaluation.ptq import quantized_copy
from haq.quant import QuantPolicy
from haq.robust import (
    ATTACK_REGISTRY,
    ATTACKS,
    DEFAULT_ATTACKS,
    AttackConfig,
    DQConfig,
    craft,
    dq_finetune_,
    fgsm,
    robust_accuracy,
)
from haq.workload import Workload, WorkloadConfig, load_workload

N = 240


@pytest.fixture(scope="module")
def mlp(cache_dir: Path, cpu: torch.device) -> Workload:
    """The deep digits MLP (float, cached)."""
    return load_workload(WorkloadConfig(model="digits_mlp"), cpu, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def mlp4(mlp: Workload, cpu: torch.device) -> nn.Module:
    """The MLP post-training quantized to 4/4 bits."""
    return quantized_copy(mlp.model, QuantPolicy.uniform(mlp.layer_names, 4), mlp.data, cpu)


def _xy(wl: Workload) -> tuple[torch.Tensor, torch.Tensor]:
    return wl.data.subset("test", N)


@pytest.mark.parametrize("attack", ATTACKS)
def test_eps_zero_returns_input_and_clean_accuracy(attack: str, mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    cfg = AttackConfig(eps=0.0, spsa_steps=2, spsa_samples=4)
    assert torch.equal(craft(attack, mlp4, x, y, cfg, cpu, (0.0, 1.0), mlp.model), x)
    report = robust_accuracy(mlp4, x, y, [attack], cfg, cpu, (0.0, 1.0), mlp.model)
    assert report.per_attack[attack] == report.clean == report.worst_case


def test_pgd_at_least_as_strong_as_fgsm_on_float(mlp: Workload, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    for eps in (0.05, 0.1, 0.2):
        r = robust_accuracy(mlp.model, x, y, ["fgsm", "pgd"], AttackConfig(eps=eps), cpu, (0.0, 1.0))
        assert r.per_attack["pgd"] <= r.per_attack["fgsm"]
        assert r.per_attack["pgd"] < r.clean


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "spsa"])
def test_accuracy_falls_monotonically_with_eps(attack: str, mlp: Workload, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    accs = [robust_accuracy(mlp.model, x, y, [attack], AttackConfig(eps=e, spsa_steps=10, spsa_samples=16), cpu,
                            (0.0, 1.0)).per_attack[attack] for e in (0.0, 0.03, 0.06, 0.12, 0.25)]
    assert all(a >= b for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0] - 0.3, accs


@pytest.mark.parametrize("attack", ATTACKS)
def test_examples_stay_in_ball_and_range(attack: str, mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    x = x * 0.8 + 0.1  # leave room on both sides so clamping and the ε-ball both bind
    eps = 0.15
    cfg = AttackConfig(eps=eps, restarts=2, spsa_steps=3, spsa_samples=4)
    x_adv = craft(attack, mlp4, x, y, cfg, cpu, (0.1, 0.9), mlp.model)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.1 - 1e-7 and float(x_adv.max()) <= 0.9 + 1e-7


def test_no_state_leaks(mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    mlp4.train()
    flags = {n: p.requires_grad for n, p in mlp4.named_parameters()}
    rng = torch.get_rng_state()
    robust_accuracy(mlp4, x, y, ATTACKS, AttackConfig(eps=0.1, spsa_steps=2, spsa_samples=4), cpu, (0.0, 1.0), mlp.model)
    assert mlp4.training and all(m.training for m in mlp4.modules())
    assert not mlp.model.training
    assert {n: p.requires_grad for n, p in mlp4.named_parameters()} == flags
    assert all(p.grad is None for p in mlp4.parameters()) and all(p.grad is None for p in mlp.model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    mlp4.eval()


@pytest.mark.parametrize("attack", ["pgd", "spsa"])
def test_seeded_attacks_are_reproducible(attack: str, mlp: Workload, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    cfg = AttackConfig(eps=0.1, spsa_steps=3, spsa_samples=8, seed=3)
    a = craft(attack, mlp.model, x, y, cfg, cpu, (0.0, 1.0))
    b = craft(attack, mlp.model, x, y, cfg, cpu, (0.0, 1.0))
    c = craft(attack, mlp.model, x, y, AttackConfig(eps=0.1, spsa_steps=3, spsa_samples=8, seed=4), cpu, (0.0, 1.0))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_restarts_never_weaken_pgd(mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    one = robust_accuracy(mlp4, x, y, ["pgd"], AttackConfig(eps=0.08, pgd_steps=5), cpu, (0.0, 1.0))
    three = robust_accuracy(mlp4, x, y, ["pgd"], AttackConfig(eps=0.08, pgd_steps=5, restarts=3), cpu, (0.0, 1.0))
    assert three.per_attack["pgd"] <= one.per_attack["pgd"]


def test_worst_case_is_per_sample_and_names_strongest(mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    r = robust_accuracy(mlp4, x, y, ["fgsm", "pgd", "transfer_pgd", "ensemble_pgd"], AttackConfig(eps=0.1), cpu,
                        (0.0, 1.0), mlp.model)
    assert r.n == N and r.eps == 0.1
    assert r.worst_case <= min(r.per_attack.values()) <= max(r.per_attack.values()) <= r.clean
    assert r.per_attack[r.strongest] == min(r.per_attack.values())
    assert set(r.to_dict()["per_attack"]) == set(r.seconds)  # type: ignore[arg-type]


def test_low_bit_worst_case_clearly_below_fgsm(mlp: Workload, cpu: torch.device) -> None:
    """Single-step FGSM through the STE overestimates the robustness of a 2-bit model (masking)."""
    q = quantized_copy(mlp.model, QuantPolicy.uniform(mlp.layer_names, 2), mlp.data, cpu)
    dq_finetune_(q, mlp.data, DQConfig(beta=0.0, epochs=3, lr=1e-3), cpu)
    x, y = mlp.data.subset("test", None)
    cfg = AttackConfig(eps=0.1, spsa_steps=10)
    r = robust_accuracy(q, x, y, ["fgsm", "pgd", "transfer_pgd", "spsa"], cfg, cpu, (0.0, 1.0), mlp.model)
    assert r.clean > 0.85
    assert r.worst_case < r.per_attack["fgsm"] - 0.05, r


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"eps": 0.1, "pgd_steps": 0}, "pgd_steps"),
        ({"eps": 0.1, "restarts": 1.5}, "restarts"),
        ({"eps": 0.1, "step_size": 0.0}, "step_size"),
        ({"eps": 0.1, "spsa_delta": float("inf")}, "spsa_delta"),
    ],
)
def test_bad_attack_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AttackConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_evaluator_arguments(mlp: Workload, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    cfg = AttackConfig(eps=0.1)
    with pytest.raises(ConfigError, match="unknown attack"):
        robust_accuracy(mlp.model, x, y, ["cw"], cfg, cpu, (0.0, 1.0))
    with pytest.raises(ConfigError, match="source_model"):
        robust_accuracy(mlp.model, x, y, ["transfer_pgd"], cfg, cpu, (0.0, 1.0))
    with pytest.raises(ConfigError, match="at least one"):
        robust_accuracy(mlp.model, x, y, [], cfg, cpu, (0.0, 1.0))
    with pytest.raises(ConfigError, match="twice"):
        robust_accuracy(mlp.model, x, y, ["pgd", "pgd"], cfg, cpu, (0.0, 1.0))
    with pytest.raises(ConfigError, match="value_range"):
        robust_accuracy(mlp.model, x, y, ["pgd"], cfg, cpu, (1.0, 0.0))
    with pytest.raises(DataError, match="non-empty"):
        robust_accuracy(mlp.model, x, y[:-1], ["pgd"], cfg, cpu, (0.0, 1.0))


def _robust_cli(argv: list[str]) -> int:
    """Run ``haq robust`` through its own parser (independent of the other sub-commands)."""
    import argparse

    from haq.commands import robust
    from haq.core.errors import HaqError

    parser = argparse.ArgumentParser(prog="haq")
    robust.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["robust", *argv])
    try:
        return int(ns.func(ns))
    except HaqError:
        return 2


def test_robust_command(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))
    args = ["--model", "digits_mlp", "--bits", "4", "--eps", "0", "0.1", "--samples", "40", "--pgd-steps", "3"]
    assert _robust_cli(args) == 0
    out = capsys.readouterr().out
    assert "| 0.1 |" in out and "worst case" in out and "uniform 4/4" in out
    assert _robust_cli(["--model", "digits_mlp", "--bits", "4", "--policy", "p.json"]) == 2
    assert _robust_cli(["--model", "digits_mlp", "--attacks", "cw", "--samples", "10"]) == 2


def test_registry_names_every_attack_once() -> None:
    assert tuple(ATTACK_REGISTRY) == ATTACKS == ("fgsm", "pgd", "transfer_fgsm", "transfer_pgd", "ensemble_pgd", "spsa")
    assert {n for n, s in ATTACK_REGISTRY.items() if s.needs_source} == {"transfer_fgsm", "transfer_pgd", "ensemble_pgd"}
    assert [n for n, s in ATTACK_REGISTRY.items() if s.gradient_free] == ["spsa"]
    assert set(DEFAULT_ATTACKS) <= set(ATTACKS)


def test_transfer_fgsm_is_fgsm_crafted_on_the_source(mlp: Workload, mlp4: nn.Module, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    cfg = AttackConfig(eps=0.1)
    on_source = fgsm(mlp.model, x, y, cfg, cpu)
    assert torch.equal(craft("transfer_fgsm", mlp4, x, y, cfg, cpu, (0.0, 1.0), mlp.model), on_source)
    assert torch.equal(craft("fgsm", mlp4, x, y, cfg, cpu, (0.0, 1.0)), fgsm(mlp4, x, y, cfg, cpu))
    assert not torch.equal(fgsm(mlp4, x, y, cfg, cpu), on_source)


def test_attack_config_round_trips_through_the_generic_serializer() -> None:
    cfg = AttackConfig(eps=0.1, step_size=0.02, restarts=2, seed=5)
    assert serial.load(AttackConfig, json.loads(json.dumps(serial.dump(cfg)))) == cfg
    with pytest.raises(ConfigError, match="attack pgd_steps"):
        serial.from_dict(AttackConfig, {"eps": 0.1, "pgd_steps": 0})
