"""The worst case over attacks is per sample: a sample is robust only if it survives every attack.

A toy classifier (logits = input) and hand-made adversarial examples make every number exact:
two attacks that each fool a different half of the samples leave no sample robust, although
each alone leaves half of them, so the worst case is 0, not min(per-attack) = 0.5.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

import pytest
import torch
from torch import nn

from haq.core.errors import ConfigError, DataError
from haq.robust import ATTACK_REGISTRY, DEFAULT_ATTACKS, AttackConfig, AttackSpec, report_from_examples, robust_accuracy
from haq.robust.evaluate import NEEDS_SOURCE, check_attacks, correct_mask

N = 8
CPU = torch.device("cpu")


def _identity_classifier() -> nn.Module:
    """Two classes; the logits are the input itself, so the label is the larger coordinate."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    return model.eval()


def _clean() -> tuple[torch.Tensor, torch.Tensor]:
    """N samples of class 0, all classified correctly."""
    return torch.tensor([[0.9, 0.1]]).repeat(N, 1), torch.zeros(N, dtype=torch.long)


def _fooling(x: torch.Tensor, fooled: Sequence[int]) -> torch.Tensor:
    """Adversarial examples that flip exactly the samples ``fooled`` to class 1."""
    x_adv = x.clone()
    x_adv[list(fooled)] = torch.tensor([0.1, 0.9])
    return x_adv


def test_two_attacks_fooling_different_halves_leave_nothing_robust() -> None:
    model = _identity_classifier()
    x, y = _clean()
    examples = {"first_half": _fooling(x, range(0, N // 2)), "second_half": _fooling(x, range(N // 2, N))}
    report = report_from_examples(model, x, y, examples, CPU, eps=0.1)
    assert report.clean == 1.0
    assert report.per_attack == {"first_half": 0.5, "second_half": 0.5}
    assert report.worst_case == 0.0
    assert report.worst_case < min(report.per_attack.values())
    assert report.strongest == "first_half"  # ties: the first in the given order


def test_overlapping_attacks_count_the_union_of_fooled_samples() -> None:
    model = _identity_classifier()
    x, y = _clean()
    examples = {"a": _fooling(x, [0, 1, 2, 3]), "b": _fooling(x, [2, 3, 4]), "c": _fooling(x, [3])}
    report = report_from_examples(model, x, y, examples, CPU, eps=0.1)
    assert report.per_attack == {"a": 0.5, "b": 5 / 8, "c": 7 / 8}
    assert report.worst_case == pytest.approx(3 / 8)  # samples 5, 6, 7 survive all three
    assert report.strongest == "a"
    alone = report_from_examples(model, x, y, {"c": examples["c"]}, CPU, eps=0.1)
    assert alone.worst_case == alone.per_attack["c"] == 7 / 8


def test_misclassified_clean_samples_are_never_robust() -> None:
    """An attack that 'repairs' a misclassified sample does not make it robust."""
    model = _identity_classifier()
    x, y = _clean()
    y[0] = 1  # sample 0 is wrong on the clean input
    repaired = _fooling(x, [0])  # ... and right on this 'adversarial' one
    report = report_from_examples(model, x, y, {"repair": repaired, "none": x.clone()}, CPU, eps=0.1)
    assert report.clean == 7 / 8
    assert report.per_attack == {"repair": 7 / 8, "none": 7 / 8}
    assert report.worst_case == 7 / 8
    assert report.n == N and report.eps == 0.1


def _fixed(x_adv: torch.Tensor) -> AttackSpec:
    """A registered attack that returns ready-made examples (to drive robust_accuracy exactly)."""

    def craft(
        target: nn.Module,
        source: nn.Module | None,
        x: torch.Tensor,
        y: torch.Tensor,
        cfg: AttackConfig,
        device: torch.device,
        value_range: object,
    ) -> torch.Tensor:
        return x_adv.clone()

    return AttackSpec(craft, False, False, "fixed examples")


def test_robust_accuracy_aggregates_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _identity_classifier()
    x, y = _clean()
    monkeypatch.setitem(ATTACK_REGISTRY, "fgsm", _fixed(_fooling(x, range(0, N // 2))))  # type: ignore[index]
    monkeypatch.setitem(ATTACK_REGISTRY, "pgd", _fixed(_fooling(x, range(N // 2, N))))  # type: ignore[index]
    report = robust_accuracy(model, x, y, ["fgsm", "pgd"], AttackConfig(eps=0.1), CPU, (0.0, 1.0))
    assert (report.per_attack["fgsm"], report.per_attack["pgd"], report.worst_case) == (0.5, 0.5, 0.0)
    single = robust_accuracy(model, x, y, ["pgd"], AttackConfig(eps=0.1), CPU, (0.0, 1.0))
    assert single.worst_case == single.per_attack["pgd"] == 0.5
    assert set(report.seconds) == {"fgsm", "pgd"}


def test_correct_mask_is_per_sample_and_restores_the_mode() -> None:
    model = _identity_classifier().train()
    x, y = _clean()
    mask = correct_mask(model, _fooling(x, [1, 6]), y, CPU, batch_size=3)
    assert mask.tolist() == [True, False, True, True, True, True, False, True]
    assert model.training
    assert correct_mask(model, x[:0], y[:0], CPU).shape == (0,)


def test_a_given_clean_mask_replaces_the_clean_pass_exactly() -> None:
    """An evaluator hands over the correctness its accuracy already measured: the report is the
    one the model's own clean pass gives, and no forward pass runs on the clean images."""
    model = _identity_classifier()
    x, y = _fooling(_clean()[0], [0]), _clean()[1]  # sample 0 already wrong on clean inputs
    examples = {"a": _fooling(x, [3]), "b": _fooling(x, [5])}
    mask = correct_mask(model, x, y, CPU)
    seen: list[torch.Tensor] = []
    model.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    given = report_from_examples(model, x, y, examples, CPU, eps=0.1, clean=mask)
    assert len(seen) == len(examples) and not any(torch.equal(t, x) for t in seen)
    assert given == report_from_examples(model, x, y, examples, CPU, eps=0.1)
    assert (given.clean, given.worst_case) == (7 / 8, 5 / 8)
    with pytest.raises(DataError, match="clean correctness mask has shape"):
        report_from_examples(model, x, y, examples, CPU, eps=0.1, clean=mask[:3])


def test_report_refuses_inconsistent_examples() -> None:
    model = _identity_classifier()
    x, y = _clean()
    with pytest.raises(DataError, match=r"^report_from_examples needs at least one attack's examples$"):
        report_from_examples(model, x, y, {}, CPU, eps=0.1)
    with pytest.raises(DataError, match=r"^adversarial examples of \['a'\] do not have the inputs' shape \(8, 2\)$"):
        report_from_examples(model, x, y, {"a": x[:, :1], "b": x}, CPU, eps=0.1)
    with pytest.raises(DataError, match=r"^inputs and labels must be matching and non-empty \(got 8 and 7\)$"):
        report_from_examples(model, x, y[:-1], {"a": x}, CPU, eps=0.1)
    with pytest.raises(DataError, match=r"^inputs and labels must be matching and non-empty \(got 0 and 0\)$"):
        report_from_examples(model, x[:0], y[:0], {"a": x[:0]}, CPU, eps=0.1)


ALL = "fgsm, pgd, transfer_fgsm, transfer_pgd, ensemble_pgd, spsa"


@pytest.mark.parametrize(
    ("attacks", "has_source", "message"),
    [
        (["cw"], True, rf"^unknown attack\(s\) \['cw'\]; choose from {ALL}$"),
        ([], True, rf"^choose at least one attack from {ALL}$"),
        (["pgd", "fgsm", "pgd"], True, r"^attack list \['pgd', 'fgsm', 'pgd'\] names an attack twice$"),
        (
            ["transfer_pgd", "ensemble_pgd", "pgd"],
            False,
            r"^attack\(s\) \['ensemble_pgd', 'transfer_pgd'\] need source_model "
            r"\(usually the float model\); pass it or drop them$",
        ),
    ],
)
def test_attack_lists_are_checked(attacks: list[str], has_source: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_attacks(attacks, has_source)


def test_attack_lists_that_pass() -> None:
    assert check_attacks(["spsa", "pgd"], False) == ("spsa", "pgd")
    assert check_attacks(["transfer_fgsm"], True) == ("transfer_fgsm",)
    assert set(NEEDS_SOURCE) == {"transfer_fgsm", "transfer_pgd", "ensemble_pgd"}
    assert DEFAULT_ATTACKS == ("fgsm", "pgd", "transfer_pgd")


def test_robust_accuracy_refuses_bad_inputs() -> None:
    model = _identity_classifier()
    x, y = _clean()
    cfg = AttackConfig(eps=0.1)
    with pytest.raises(DataError, match=r"^robust_accuracy needs matching, non-empty inputs and labels \(got 8 and 7\)$"):
        robust_accuracy(model, x, y[:-1], ["pgd"], cfg, CPU, (0.0, 1.0))
    with pytest.raises(DataError, match=r"\(got 0 and 0\)$"):
        robust_accuracy(model, x[:0], y[:0], ["pgd"], cfg, CPU, (0.0, 1.0))
    with pytest.raises(ConfigError, match="unknown attack"):
        robust_accuracy(model, x, y, ["cw"], cfg, CPU, (0.0, 1.0))


def test_robust_accuracy_logs_each_attack_and_reports_eps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _identity_classifier()
    x, y = _clean()
    monkeypatch.setitem(ATTACK_REGISTRY, "fgsm", _fixed(_fooling(x, [0])))  # type: ignore[index]
    lines: list[str] = []
    report = robust_accuracy(model, x, y, ["fgsm"], AttackConfig(eps=0.25), CPU, (0.0, 1.0), log=lines.append)
    assert report.eps == 0.25 and report.n == N and report.worst_case == 7 / 8
    assert len(lines) == 1 and re.fullmatch(r"  fgsm: crafted in \d+\.\d\ds", lines[0]), lines
    assert report.seconds["fgsm"] >= 0.0
    assert report.to_dict()["per_attack"] == {"fgsm": 7 / 8} and report.to_dict()["strongest"] == "fgsm"


def test_strongest_is_the_lowest_accuracy_not_the_first_name() -> None:
    model = _identity_classifier()
    x, y = _clean()
    examples = {"a_weak": _fooling(x, [0]), "z_strong": _fooling(x, [0, 1, 2]), "m_middle": _fooling(x, [0, 1])}
    report = report_from_examples(model, x, y, examples, CPU, eps=0.1)
    assert report.strongest == "z_strong" and report.worst_case == 5 / 8


def test_a_single_sample_is_attacked_and_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _identity_classifier()
    x, y = _clean()
    monkeypatch.setitem(ATTACK_REGISTRY, "pgd", _fixed(_fooling(x[:1], [0])))  # type: ignore[index]
    before = time.perf_counter()
    report = robust_accuracy(model, x[:1], y[:1], ["pgd"], AttackConfig(eps=0.1), CPU, (0.0, 1.0))
    took = time.perf_counter() - before
    assert report.n == 1 and report.clean == 1.0 and report.worst_case == 0.0
    assert 0.0 <= report.seconds["pgd"] <= took  # the attack's own time, not a clock reading
