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
    ensemble_pgd,
    fgsm,
    pgd,
    robust_accuracy,
    spsa,
    transfer_pgd,
)
from haq.robust.evaluate import correct_mask
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
    accs = [
        robust_accuracy(
            mlp.model, x, y, [attack], AttackConfig(eps=e, spsa_steps=10, spsa_samples=16), cpu, (0.0, 1.0)
        ).per_attack[attack]
        for e in (0.0, 0.03, 0.06, 0.12, 0.25)
    ]
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


@pytest.mark.parametrize("attack", ["pgd", "spsa"])
def test_large_steps_end_on_the_eps_ball(attack: str, mlp: Workload, cpu: torch.device) -> None:
    """With steps far larger than ε every moved coordinate is projected back onto the ball's
    surface: |x_adv - x| is exactly ε there (0 elsewhere), never more and never less."""
    x, y = _xy(mlp)
    x = x * 0.5 + 0.25  # the data range [0, 1] stays out of reach, so only the ε-ball binds
    eps = 0.05
    cfg = AttackConfig(
        eps=eps, pgd_steps=3, step_size=10 * eps, random_start=False, spsa_steps=3, spsa_samples=4, spsa_step_size=10 * eps
    )
    moved = (craft(attack, mlp.model, x, y, cfg, cpu, (0.0, 1.0)) - x).abs()
    on_surface = torch.isclose(moved, torch.tensor(eps), atol=1e-6)
    assert bool((on_surface | (moved == 0)).all())
    assert float(on_surface.float().mean()) > 0.5


def test_one_pgd_step_of_size_eps_is_fgsm(mlp: Workload, cpu: torch.device) -> None:
    """Without a random start, one PGD step of size ε from the clean input is FGSM (on every
    sample the model gets right; PGD leaves misclassified samples where they are)."""
    x, y = _xy(mlp)
    cfg = AttackConfig(eps=0.1, pgd_steps=1, step_size=0.1, random_start=False)
    one_step = craft("pgd", mlp.model, x, y, cfg, cpu, (0.0, 1.0))
    right = correct_mask(mlp.model, x, y, cpu)
    assert bool(right.any())
    torch.testing.assert_close(one_step[right], fgsm(mlp.model, x, y, cfg, cpu)[right], atol=1e-6, rtol=0)
    assert torch.equal(one_step[~right], x[~right])


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
    r = robust_accuracy(
        mlp4, x, y, ["fgsm", "pgd", "transfer_pgd", "ensemble_pgd"], AttackConfig(eps=0.1), cpu, (0.0, 1.0), mlp.model
    )
    assert r.n == N and r.eps == 0.1
    assert r.worst_case <= min(r.per_attack.values()) <= max(r.per_attack.values()) <= r.clean
    assert r.per_attack[r.strongest] == min(r.per_attack.values())
    assert set(r.to_dict()["per_attack"]) == set(r.seconds)  # type: ignore[arg-type]
    # Recomputed per sample from the attacks' own examples: robust = right on clean and on every attack.
    survived = correct_mask(mlp4, x, y, cpu)
    for name in r.per_attack:
        adv = craft(name, mlp4, x, y, AttackConfig(eps=0.1), cpu, (0.0, 1.0), mlp.model)
        ok = correct_mask(mlp4, x, y, cpu) & correct_mask(mlp4, adv, y, cpu)
        assert r.per_attack[name] == pytest.approx(float(ok.float().mean()))
        survived &= ok
    assert r.worst_case == pytest.approx(float(survived.float().mean()))


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
        ({"eps": -0.1}, r"^attack eps must be >= 0\.0, got -0\.1$"),
        ({"eps": float("nan")}, "^attack eps "),
        ({"eps": 0.1, "pgd_steps": 0}, r"^attack pgd_steps must be an integer >= 1, got 0$"),
        ({"eps": 0.1, "restarts": 1.5}, r"^attack restarts must be an integer >= 1, got 1\.5$"),
        ({"eps": 0.1, "step_size": 0.0}, r"^attack step_size must be > 0, got 0\.0$"),
        ({"eps": 0.1, "spsa_delta": float("inf")}, r"^attack spsa_delta must be a finite number, got inf$"),
        ({"eps": 0.1, "spsa_step_size": -1.0}, r"^attack spsa_step_size must be > 0, got -1\.0$"),
        ({"eps": 0.1, "spsa_samples": 0}, r"^attack spsa_samples must be an integer >= 1, got 0$"),
        ({"eps": 0.1, "spsa_steps": 0}, r"^attack spsa_steps must be an integer >= 1, got 0$"),
        ({"eps": 0.1, "batch_size": 0}, r"^attack batch_size must be an integer >= 1, got 0$"),
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


def test_robust_command(capsys: pytest.CaptureFixture[str]) -> None:
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


# ---------------------------------------------------------------- exact trajectories on a toy model


def _toy() -> nn.Module:
    """Two classes whose logits are the input: from (0.6, 0.4), label 0, the loss rises fastest
    along (-1, +1) and the model is fooled once the second coordinate is the larger."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model.eval()


TOY_X, TOY_Y = torch.tensor([[0.6, 0.4]]), torch.tensor([0])
CPU = torch.device("cpu")


def test_margin_is_true_logit_minus_best_other() -> None:
    from haq.robust.attacks import margin

    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert margin(logits, torch.tensor([0, 2])).tolist() == [1.0, -4.0]


def test_fgsm_moves_every_coordinate_by_eps() -> None:
    out = fgsm(_toy(), TOY_X, TOY_Y, AttackConfig(eps=0.15), CPU)
    torch.testing.assert_close(out, torch.tensor([[0.45, 0.55]]))
    clamped = fgsm(_toy(), TOY_X, TOY_Y, AttackConfig(eps=0.15), CPU, (0.5, 0.52))
    torch.testing.assert_close(clamped, torch.tensor([[0.5, 0.52]]))


def test_pgd_stops_where_it_fools_and_transfer_pgd_goes_on() -> None:
    cfg = AttackConfig(eps=0.3, pgd_steps=10, step_size=0.05, random_start=False)
    # (0.55, 0.45), (0.5, 0.5) (a tie counts as class 0), (0.45, 0.55): fooled after three steps
    torch.testing.assert_close(pgd(_toy(), TOY_X, TOY_Y, cfg, CPU), torch.tensor([[0.45, 0.55]]))
    # without early stop it walks all ten steps and ends on the ε-ball
    torch.testing.assert_close(transfer_pgd(_toy(), TOY_X, TOY_Y, cfg, CPU), torch.tensor([[0.3, 0.7]]))
    # ... or on the data range, whichever binds first
    torch.testing.assert_close(transfer_pgd(_toy(), TOY_X, TOY_Y, cfg, CPU, (0.35, 0.65)), torch.tensor([[0.35, 0.65]]))
    # the default step is 2.5 ε / steps: 0.125 here, fooled after one step
    default = AttackConfig(eps=0.2, pgd_steps=4, random_start=False)
    assert default.pgd_step == pytest.approx(0.125)
    torch.testing.assert_close(pgd(_toy(), TOY_X, TOY_Y, default, CPU), torch.tensor([[0.475, 0.525]]))


def test_spsa_estimates_the_same_direction_without_gradients() -> None:
    cfg = AttackConfig(eps=0.3, spsa_steps=10, spsa_step_size=0.05, spsa_samples=16, spsa_delta=0.01)
    torch.testing.assert_close(spsa(_toy(), TOY_X, TOY_Y, cfg, CPU), torch.tensor([[0.45, 0.55]]))
    default = AttackConfig(eps=0.2, spsa_steps=2, spsa_samples=16, spsa_delta=0.01)
    assert default.spsa_step == pytest.approx(0.05)
    torch.testing.assert_close(spsa(_toy(), TOY_X, TOY_Y, default, CPU), torch.tensor([[0.5, 0.5]]))


def test_ensemble_pgd_follows_the_summed_loss_and_the_target_judges() -> None:
    """A source that pulls the other way with a steeper loss wins the sum: the sample moves away from
    the target's decision boundary, all five steps, because the target (the judge) is never fooled."""
    target, source = _toy(), _toy()
    with torch.no_grad():
        source.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # classes swapped: its loss rises along (+1, -1)
    cfg = AttackConfig(eps=0.3, pgd_steps=5, step_size=0.05, random_start=False)
    # d/dx of the summed cross-entropy at (0.6, 0.4): target (-0.45, 0.45) + source (0.55, -0.55)
    torch.testing.assert_close(ensemble_pgd(target, source, TOY_X, TOY_Y, cfg, CPU), torch.tensor([[0.85, 0.15]]))
    torch.testing.assert_close(ensemble_pgd(target, _toy(), TOY_X, TOY_Y, cfg, CPU), torch.tensor([[0.45, 0.55]]))


def test_restarts_keep_a_fooling_point_over_a_higher_loss_one() -> None:
    """Each sample keeps the first restart that fools the judge; random starts stay in the ball."""
    x = TOY_X.repeat(64, 1)
    y = TOY_Y.repeat(64)
    cfg = AttackConfig(eps=0.12, pgd_steps=1, step_size=0.01, restarts=4, seed=1)
    out = pgd(_toy(), x, y, cfg, CPU)
    assert float((out - x).abs().max()) <= 0.12 + 1e-6
    fooled = out[:, 1] > out[:, 0]
    one = pgd(_toy(), x, y, AttackConfig(eps=0.12, pgd_steps=1, step_size=0.01, restarts=1, seed=1), CPU)
    fooled_first = one[:, 1] > one[:, 0]
    assert int(fooled.sum()) > int(fooled_first.sum()) > 0
    assert bool(fooled[fooled_first].all())  # the first restart draws the same start: its fooling points stay ...
    assert torch.equal(out[fooled_first], one[fooled_first])  # ... untouched by later restarts
    # and no sample ends weaker than after the first restart (margin x0 - x1: lower is stronger)
    assert bool((out[:, 0] - out[:, 1] <= one[:, 0] - one[:, 1] + 1e-6).all())


def test_spsa_does_not_move_where_its_estimate_is_zero() -> None:
    """One direction pair per step: when both coordinates draw the same sign the two probes tie,
    the estimate is 0 and SPSA stays put; otherwise it steps. Both happen over ten seeds."""
    outcomes = set()
    for seed in range(10):
        cfg = AttackConfig(eps=0.1, spsa_steps=1, spsa_samples=1, spsa_step_size=0.05, spsa_delta=0.01, seed=seed)
        out = spsa(_toy(), TOY_X, TOY_Y, cfg, CPU)
        if torch.equal(out, TOY_X):
            outcomes.add("stayed")
        else:
            torch.testing.assert_close(out, torch.tensor([[0.55, 0.45]]))
            outcomes.add("stepped")
    assert outcomes == {"stayed", "stepped"}


def test_coordinates_without_gradient_do_not_move() -> None:
    """A third input the model ignores has zero gradient: sign 0, no step, for PGD and FGSM alike."""
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    x = torch.tensor([[0.6, 0.4, 0.5]])
    cfg = AttackConfig(eps=0.3, pgd_steps=10, step_size=0.05, random_start=False)
    torch.testing.assert_close(transfer_pgd(model, x, TOY_Y, cfg, CPU), torch.tensor([[0.3, 0.7, 0.5]]))
    torch.testing.assert_close(fgsm(model, x, TOY_Y, cfg, CPU), torch.tensor([[0.3, 0.7, 0.5]]))


def test_eps_and_steps_are_pixel_units_on_normalized_inputs() -> None:
    """With std 0.5 the model sees twice the pixel values: ε and every step double in its space."""
    from haq.data.space import InputRange

    space = InputRange(0.0, 1.0, mean=(0.0, 0.0), std=(0.5, 0.5))
    z = space.from_pixels(TOY_X)  # (1.2, 0.8)
    cfg = AttackConfig(
        eps=0.3, pgd_steps=10, step_size=0.05, random_start=False, spsa_steps=10, spsa_step_size=0.05, spsa_delta=0.01
    )
    torch.testing.assert_close(pgd(_toy(), z, TOY_Y, cfg, CPU, space), torch.tensor([[0.9, 1.1]]))
    torch.testing.assert_close(transfer_pgd(_toy(), z, TOY_Y, cfg, CPU, space), torch.tensor([[0.6, 1.4]]))
    torch.testing.assert_close(spsa(_toy(), z, TOY_Y, cfg, CPU, space), torch.tensor([[0.9, 1.1]]))
    torch.testing.assert_close(fgsm(_toy(), z, TOY_Y, cfg, CPU, space), torch.tensor([[0.6, 1.4]]))


def test_inputs_are_checked_and_trivial_cases_short_cut() -> None:
    from haq.robust.attacks import check_value_range

    with pytest.raises(ConfigError, match=r"^value_range must be \(low, high\), got \(1\.0,\)$"):
        check_value_range((1.0,))
    with pytest.raises(ConfigError, match=r"^value_range must be finite with low < high, got \(1\.0, 0\.0\)$"):
        check_value_range((1.0, 0.0))
    with pytest.raises(ConfigError, match="finite with low < high"):
        check_value_range((0.0, float("inf")))
    with pytest.raises(DataError, match=r"^attack inputs and labels differ in length: 1 vs 2$"):
        fgsm(_toy(), TOY_X, torch.tensor([0, 1]), AttackConfig(eps=0.1), CPU)
    same = pgd(_toy(), TOY_X, TOY_Y, AttackConfig(eps=0.0), CPU)
    assert torch.equal(same, TOY_X) and same is not TOY_X
    assert pgd(_toy(), TOY_X[:0], TOY_Y[:0], AttackConfig(eps=0.1), CPU).shape == (0, 2)


def test_batching_does_not_change_deterministic_attacks(mlp: Workload, cpu: torch.device) -> None:
    x, y = _xy(mlp)
    whole = fgsm(mlp.model, x, y, AttackConfig(eps=0.1), cpu)
    assert torch.equal(fgsm(mlp.model, x, y, AttackConfig(eps=0.1, batch_size=7), cpu), whole)
    cfg = AttackConfig(eps=0.1, random_start=False, pgd_steps=3)
    assert torch.equal(
        pgd(mlp.model, x, y, AttackConfig(eps=0.1, random_start=False, pgd_steps=3, batch_size=7), cpu),
        pgd(mlp.model, x, y, cfg, cpu),
    )
