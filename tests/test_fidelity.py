"""Multi-fidelity scoring: the cheap evaluator screens, the full one judges the policies that can
still win, the calibration line puts screened rewards on the full scale, and every scored policy
says which fidelity scored it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from search_fakes import AnalyticTable, LinearEvaluator

from haq.core.errors import ConfigError
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import CachedEvaluator, build_evaluator
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.problem.config import EnvConfig
from haq.problem.fidelity import CHEAP, FULL, Calibration, FidelityScreen
from haq.problem.problem import build_problem, evaluator_kinds
from haq.quant import LayerBits, QuantPolicy
from haq.workload import Workload


def _policy(bits: int) -> QuantPolicy:
    return QuantPolicy({"a": LayerBits(bits, bits), "b": LayerBits(bits, 8)})


def _reward(metrics: PolicyMetrics, reference: ReferenceMetrics) -> float:
    return metrics.clean_acc - reference.clean_acc


def _screen(
    calibration: int = 3, z: float = 0.0, min_fraction: float = 0.0
) -> tuple[FidelityScreen, LinearEvaluator, LinearEvaluator]:
    cheap, full = LinearEvaluator(0.1, 0.0), LinearEvaluator(0.1, 0.2)
    return FidelityScreen(CachedEvaluator(cheap), CachedEvaluator(full), _reward, calibration, z, min_fraction), cheap, full


def test_calibration_is_an_offset_first_then_a_regression() -> None:
    cal = Calibration(ridge=0.0)
    assert cal.fit().std == math.inf and cal.fit()(np.array([0.3, 0.5, 0.5])) == pytest.approx(0.3)
    cal.add(np.array([0.0, 0.5, 0.5]), 1.0)
    cal.add(np.array([1.0, 0.25, 0.5]), 2.0)
    offset = cal.fit()
    assert offset(np.array([3.0, 0.5, 0.5])) == pytest.approx(4.0) and offset.std == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    exact = Calibration(ridge=0.0)
    for _ in range(10):
        x = rng.uniform(0, 1, 3)
        exact.add(x, 2.0 * x[0] - x[1] + 0.5 * x[2] + 0.25)
    fitted = exact.fit()
    assert fitted(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.75) and fitted.std == pytest.approx(0.0, abs=1e-9)


def test_calibrating_policies_all_get_the_full_evaluation() -> None:
    screen, cheap, full = _screen(calibration=3)
    scored = screen.score_many([_policy(b) for b in (2, 4, 6)])
    assert [s.fidelity for s in scored] == [FULL] * 3 and full.calls == 3 and cheap.calls == 3
    assert all(s.cheap_reward is not None for s in scored)
    assert screen.full_evaluations == 3


def test_screened_policies_keep_the_predicted_full_reward_and_never_become_best() -> None:
    screen, _, full = _screen(calibration=3, z=0.0)
    screen.score_many([_policy(b) for b in (2, 5, 8)])  # full = cheap + 0.2 exactly: the offset model is exact
    low, high = screen.score_many([_policy(3), _policy(8)])
    assert low.fidelity == CHEAP and high.fidelity == FULL and high.cached
    truth = _reward(PolicyMetrics(0.2 + 0.1 * 3, None, 1.0, None, 8), ReferenceMetrics(1.0, None))
    assert low.reward == pytest.approx(truth)
    assert low.reward < screen.best_full
    assert full.calls == 3
    assert low.annotations() == {"fidelity": CHEAP, "cheap_reward": low.cheap_reward}


def test_a_policy_that_can_still_win_gets_the_full_evaluation() -> None:
    screen, _, full = _screen(calibration=2, z=0.0)
    screen.score_many([_policy(2), _policy(4)])
    (better,) = screen.score_many([_policy(7)])
    assert better.fidelity == FULL and full.calls == 3 and screen.best_full == better.reward


def test_a_minimum_fraction_of_full_evaluations_is_kept() -> None:
    screen, _, full = _screen(calibration=2, z=0.0, min_fraction=0.5)
    screen.score_many([_policy(7), _policy(8)])
    scored = screen.score_many([_policy(b) for b in (2, 3, 4, 5)])
    assert [s.fidelity for s in scored] == [CHEAP, CHEAP, CHEAP, FULL]  # half of 6 in full: the predicted best
    assert screen.full_evaluations == 3 == full.calls


def test_the_allowance_caps_the_full_evaluations_and_repeats_stay_free() -> None:
    """Once a search has spent its allowance every new policy keeps its prediction, even one that
    could win or is still calibrating; a policy judged in full before is still returned in full."""
    screen, _, full = _screen(calibration=10, z=100.0, min_fraction=1.0)
    screen.allowance = 3
    first = screen.score_many([_policy(b) for b in (2, 2, 3, 4, 5)])  # a repeat inside the batch costs nothing
    assert [s.fidelity for s in first] == [FULL, FULL, FULL, FULL, CHEAP] and full.calls == 3
    again = screen.score_many([_policy(8), _policy(3)])
    assert [s.fidelity for s in again] == [CHEAP, FULL] and again[1].cached
    assert screen.full_evaluations == 3 == full.calls
    best = screen.best_full  # policy 4's; policy 8 is predicted above it, and stays just below
    assert best is not None and again[0].reward == math.nextafter(best, -math.inf)


def test_a_run_plans_its_allowance_from_its_length(digits_workload: Workload) -> None:
    env = EnvConfig(evaluation=EvalConfig(kind="multi", val_samples=60, robust_samples=20, screen_max_fraction=0.25))
    problem = build_problem(env, table=AnalyticTable(), workload=digits_workload)
    assert problem.screen is not None and problem.screen.allowance is None
    problem.plan(30)
    assert problem.screen.allowance == 7
    build_problem(EnvConfig(), table=AnalyticTable(), workload=digits_workload).plan(30)  # no screen: nothing to plan
    with pytest.raises(ConfigError, match="screen_max_fraction .* must be >= screen_min_fraction"):
        EvalConfig(kind="multi", screen_max_fraction=0.1, screen_min_fraction=0.2)


def test_promote_scores_the_best_predicted_distinct_policies_in_full() -> None:
    """At the end of a run the final prediction ranks the screened-out policies; the best
    ``allowance`` distinct ones, never one already scored in full, get the full evaluation."""
    screen, _, full = _screen(calibration=2, z=0.0)
    screen.score_many([_policy(7), _policy(8)])
    out = screen.score_many([_policy(b) for b in (2, 5, 3, 6)])
    assert [s.fidelity for s in out] == [CHEAP] * 4 and full.calls == 2
    policies = [_policy(b) for b in (2, 5, 3, 6, 6, 8)]  # a repeat, and one scored in full before
    cheap = [0.2, 0.5, 0.3, 0.6, 0.6, 0.8]
    promoted = screen.promote(policies, cheap, 2)
    assert [i for i, _ in promoted] == [3, 1] and full.calls == 4 and screen.full_evaluations == 4
    assert all(s.fidelity == FULL and s.reward == pytest.approx(c + 0.2 - 1.0) for (i, s), c in zip(promoted, (0.6, 0.5)))
    assert screen.promote(policies, cheap, 0) == [] and full.calls == 4


def _patient(calibration: int, patience: int) -> FidelityScreen:
    cheap, full = LinearEvaluator(0.1, 0.0), LinearEvaluator(0.1, 0.2)
    return FidelityScreen(CachedEvaluator(cheap), CachedEvaluator(full), _reward, calibration, 0.0, 0.0, patience=patience)


def test_patience_ends_the_calibration_once_the_best_stops_rising_and_not_before_half() -> None:
    falling = [_policy(b) for b in (8, 7, 6, 5, 4)]  # the best is the first: it never rises again
    patient = _patient(calibration=8, patience=2)
    fidelities = [patient.score_many([p])[0].fidelity for p in falling]
    assert patient.calibrated_early == 4  # half of 8, not 3 (two after the best already at 3)
    assert fidelities == [FULL, FULL, FULL, FULL, CHEAP]
    unbounded = _patient(calibration=8, patience=0)
    assert [unbounded.score_many([p])[0].fidelity for p in falling] == [FULL] * 5 and unbounded.calibrated_early is None
    rising = _patient(calibration=8, patience=2)
    assert [rising.score_many([_policy(b)])[0].fidelity for b in (2, 3, 4, 5, 6, 7)] == [FULL] * 6
    assert rising.calibrated_early is None


def test_a_resumed_screen_ends_its_calibration_where_the_first_run_did() -> None:
    falling = [_policy(b) for b in (8, 7, 6, 5, 4, 3)]
    first = _patient(calibration=8, patience=2)
    scored = [first.score_many([p])[0] for p in falling]
    again = _patient(calibration=8, patience=2)
    for p, s in zip(falling, scored):
        again.remember(p, s)
    assert again.calibrated_early == first.calibrated_early == 4
    assert again.score_many([_policy(2)])[0].fidelity == first.score_many([_policy(2)])[0].fidelity == CHEAP


def test_remember_restores_the_calibration_and_the_caches() -> None:
    screen, _, _ = _screen(calibration=2)
    scored = screen.score_many([_policy(2), _policy(6), _policy(3)])
    again, cheap, full = _screen(calibration=2)
    for bits, s in zip((2, 6, 3), scored):
        again.remember(_policy(bits), s)
    a, b = again.calibration.fit(), screen.calibration.fit()
    assert (a.offset, list(a.coef), a.std, again.best_full) == (b.offset, list(b.coef), b.std, screen.best_full)
    assert (again.scored, again.full_evaluations) == (screen.scored, screen.full_evaluations)
    assert [s.reward for s in again.score_many([_policy(b) for b in (2, 6, 3)])] == [s.reward for s in scored]
    assert cheap.calls == 0 and full.calls == 0


def test_multi_is_a_search_evaluator_only(digits_workload: Workload) -> None:
    with pytest.raises(ConfigError, match="combines two evaluators"):
        build_evaluator(digits_workload, AnalyticTable(), EvalConfig(kind="multi"))
    with pytest.raises(ConfigError, match="screen_z"):
        EvalConfig(kind="multi", screen_z=-1.0)


def test_the_screen_sees_the_transfer_attack_the_full_evaluator_runs(digits_workload: Workload) -> None:
    """Without a fine-tune, the screen's robust accuracy is exactly the full evaluator's with the
    same transferred attack alone: the examples crafted once are the ones crafted per policy."""
    cfg = EvalConfig(val_samples=120, robust_samples=40, attack_steps=3)
    full_cfg = dataclasses.replace(cfg, kind=FULL, finetune_epochs=0, attacks=("transfer_pgd",))
    screen, full, cheap = (
        build_evaluator(digits_workload, AnalyticTable(), c) for c in (dataclasses.replace(cfg, kind="screen"), full_cfg, cfg)
    )
    ref = screen.reference
    assert ref.robust_acc is not None and ref.robust_acc < ref.clean_acc  # crafted on the float model itself
    assert ref == full.reference and cheap.reference.robust_acc is None
    for bits in (2, 3, 8):
        policy = QuantPolicy({layer.name: LayerBits(bits, bits) for layer in digits_workload.layers})
        got, want = screen.evaluate(policy), full.evaluate(policy)
        assert (got.clean_acc, got.robust_acc) == (want.clean_acc, want.robust_acc)
        assert got.clean_acc == cheap.evaluate(policy).clean_acc


def test_a_multi_search_screens_with_the_robust_screen_unless_told_otherwise(digits_workload: Workload) -> None:
    env = EnvConfig(evaluation=EvalConfig(kind="multi", val_samples=60, robust_samples=20, attack_steps=2))
    problem = build_problem(env, table=AnalyticTable(), workload=digits_workload)
    assert problem.screen is not None and problem.screen.cheap.reference.robust_acc is not None
    assert evaluator_kinds(env) == ("screen", FULL)
    clean = EnvConfig(evaluation=EvalConfig(kind="multi", screen_kind=CHEAP, val_samples=60))
    assert evaluator_kinds(clean) == (CHEAP, FULL)
    with pytest.raises(ConfigError, match="screen_kind"):
        EvalConfig(kind="multi", screen_kind="full")
