"""What the search judges with and what the agent sees: the honest final pick (top k re-scored on
held-out images, reported on the test split) and the sensitivity observation layout (v1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.mixed_precision import OBS_FEATURES, OBSERVATION_FEATURES, MixedPrecisionEnv
from haq.baselines.candidates import random_candidates
from haq.core.errors import ConfigError, DataError
from haq.evaluation.config import EvalConfig
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.select import choosing_seeds, pick_final, pick_images, report_seeds, swapped_images
from haq.quant import QuantPolicy


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def test_the_pick_rescores_the_top_k_on_images_the_search_never_saw(problem: SearchProblem) -> None:
    pols = [problem.policy(c.pairs) for c in random_candidates(problem.budget_model, 8, np.random.default_rng(0), "stepwise")]
    candidates = [(p, problem.score(p).reward) for p in pols]
    pick = pick_final(problem, candidates, k=3)
    top3 = sorted(range(8), key=lambda i: -candidates[i][1])[:3]
    assert sorted(pick.select_rewards) == sorted(top3) and pick.index in top3
    assert pick.index == max(top3, key=lambda i: (pick.select_rewards[i], -top3.index(i)))
    # digits has 359 validation images, 300 searched: too few left, so test halves pick and report
    assert (pick.select_images, pick.test_images) == ("test[0:180]", "test[180:360]")
    assert 0.0 <= pick.test.clean_acc <= 1.0 and pick.policy is candidates[pick.index][0]
    with pytest.raises(ConfigError, match="at least one"):
        pick_final(problem, [])


def settled_last(problem: SearchProblem) -> list[tuple[QuantPolicy, float]]:
    """Eight scored policies, best first, then the worst by search reward proposed twice more
    (its first proposal at 7: the run's most proposed)."""
    pols = [problem.policy(c.pairs) for c in random_candidates(problem.budget_model, 8, np.random.default_rng(0), "stepwise")]
    scored = sorted(((p, problem.score(p).reward) for p in pols), key=lambda c: -c[1])
    return [*scored, scored[-1], scored[-1]]


def test_a_repeated_proposal_outside_the_top_k_is_re_scored_too(problem: SearchProblem) -> None:
    candidates = settled_last(problem)
    plain = pick_final(problem, candidates, k=3)
    assert sorted(plain.select_rewards) == [0, 1, 2]
    pick = pick_final(problem, candidates, k=3, repeats=2)
    assert sorted(pick.select_rewards) == [0, 1, 2, 7]  # its first proposal joins the top 3
    assert {i: pick.select_rewards[i] for i in (0, 1, 2)} == plain.select_rewards
    assert pick.index == max(pick.select_rewards, key=lambda i: (pick.select_rewards[i], -[0, 1, 2, 7].index(i)))


def test_a_deferring_pick_keeps_the_most_proposed_policy_and_scores_it_even_without_repeats(problem: SearchProblem) -> None:
    candidates = settled_last(problem)
    plain = pick_final(problem, candidates, k=3)
    assert plain.settled is None and plain.index in (0, 1, 2)
    kept = pick_final(problem, candidates, k=3, defer=1000.0)  # no candidate can beat it by 1000 images
    assert sorted(kept.select_rewards) == [0, 1, 2, 7] and (kept.index, kept.settled) == (7, 7)
    assert kept.policy is candidates[7][0]
    assert {i: kept.select_rewards[i] for i in (0, 1, 2)} == plain.select_rewards
    tiny = pick_final(problem, candidates, k=3, repeats=2, defer=1e-9)
    assert tiny.settled == 7 and tiny.index == max(tiny.select_rewards, key=lambda i: tiny.select_rewards[i])


FullThree = tuple[SearchProblem, list[tuple[QuantPolicy, float]]]


@pytest.fixture(scope="module")
def full_three(cache_dir: Path) -> FullThree:
    """A full-evaluator problem and three of its feasible policies, ranked by a made-up search reward."""
    full = make_problem(EnvConfig(evaluation=EvalConfig(kind="full")), cache_dir=cache_dir)
    pols = [full.policy(c.pairs) for c in random_candidates(full.budget_model, 3, np.random.default_rng(2), "stepwise")]
    return full, [(p, float(-i)) for i, p in enumerate(pols)]


def test_a_report_under_several_evaluator_seeds_is_their_mean_the_workload_s_own_first(full_three: FullThree) -> None:
    full, candidates = full_three
    one = pick_final(full, candidates, k=2)
    three = pick_final(full, candidates, k=2, seeds=3)
    assert three.index == one.index and [r.seed for r in three.by_seed] == [0, 101, 102]
    timeless = [dataclasses.replace(m, eval_seconds=0.0) for m in (three.test, one.test)]
    assert three.by_seed[0].reward == one.test_reward and timeless[0] == timeless[1]  # the own seed's report, unchanged
    assert three.test_reward == pytest.approx(sum(r.reward for r in three.by_seed) / 3)
    for r in three.by_seed[1:]:  # each scored by an evaluator seeded so, computed on its own
        ev = held_out_evaluator(full.workload, full.table, full.config.evaluation, "full", Images("test", 180, 360), r.seed)
        assert r.reward == pytest.approx(full.reward(ev.evaluate(candidates[three.index][0]), ev.reference), abs=1e-12)
    assert len({r.reward for r in three.by_seed}) > 1  # the fine-tune's seed moves the reward
    assert report_seeds(7, 1) == (7,)
    with pytest.raises(ConfigError, match="report seeds"):
        pick_final(full, candidates, k=2, seeds=0)


def test_a_pick_choosing_under_other_seeds_compares_their_mean_and_reports_as_before(full_three: FullThree) -> None:
    full, candidates = full_three
    own = pick_final(full, candidates, k=3)
    two = pick_final(full, candidates, k=3, select_seeds=2)
    assert own.select_seeds == (0,) and two.select_seeds == (201, 202)
    chooser = [
        held_out_evaluator(full.workload, full.table, full.config.evaluation, "full", Images("test", 0, 180), s)
        for s in (201, 202)
    ]
    for i, (policy, _) in enumerate(candidates):  # each candidate's selection reward: the mean over the two seeds
        each = [full.reward(ev.evaluate(policy), ev.reference) for ev in chooser]
        assert two.select_rewards[i] == pytest.approx(sum(each) / 2, abs=1e-12)
    assert two.select_rewards != own.select_rewards  # the fine-tune's seed moves the selection score
    assert two.index == max(two.select_rewards, key=lambda i: (two.select_rewards[i], -i))
    assert [r.seed for r in two.by_seed] == [0]  # the report is still under the workload's own seed
    assert choosing_seeds(201, 2) == (202, 203) and choosing_seeds(5, 0) == (5,)  # never the seed the search used
    with pytest.raises(ConfigError, match="select seeds"):
        pick_final(full, candidates, k=3, select_seeds=-1)


def test_the_other_fold_selects_on_the_half_that_reported_and_reports_on_the_one_that_selected(problem: SearchProblem) -> None:
    pols = [problem.policy(c.pairs) for c in random_candidates(problem.budget_model, 8, np.random.default_rng(1), "stepwise")]
    candidates = [(p, problem.score(p).reward) for p in pols]
    first = pick_final(problem, candidates, k=4)
    swapped = swapped_images(problem)
    assert swapped == (Images("test", 180, 360), Images("test", 0, 180))
    second = pick_final(problem, candidates, k=4, images=swapped)
    assert (second.select_images, second.test_images) == ("test[180:360]", "test[0:180]")
    assert sorted(second.select_rewards) == sorted(first.select_rewards)  # the same top k, re-scored on the other half
    reporter = problem.held_out("cheap", Images("test", 0, 180))
    assert second.test_reward == pytest.approx(problem.reward(reporter.evaluate(candidates[second.index][0]), reporter.reference))
    assert second.select_rewards[second.index] == max(second.select_rewards.values())
    # with enough validation images left the pick reports on the whole test split: there is no other fold
    roomy = dataclasses.replace(problem, config=dataclasses.replace(problem.config, evaluation=EvalConfig(val_samples=100)))
    assert pick_images(roomy) == (Images("val", 100, 250), Images("test", 0, 360)) and swapped_images(roomy) is None
    with pytest.raises(ConfigError, match="select_samples"):
        pick_images(problem, 0)


def test_held_out_images_are_checked_in_one_line(problem: SearchProblem) -> None:
    with pytest.raises(DataError, match="one of test, val, got 'train'"):
        Images("train", 0, 10)
    with pytest.raises(DataError, match="0 <= start < stop, got 5:5"):
        Images("val", 5, 5)
    with pytest.raises(DataError, match=r"test\[0:9999\] asks for images beyond the 360 of the test split"):
        problem.held_out("cheap", Images("test", 0, 9999))
    test, model = problem.workload.data.test, problem.workload.model.eval()
    with torch.no_grad():
        x, y = zip(*(test[i] for i in range(len(test))))
        right = model(torch.stack(x).to(problem.workload.device)).argmax(1).cpu() == torch.tensor([int(t) for t in y])
    first_wrong = next(i for i in range(10, len(right)) if not right[i])  # a range the float model gets partly wrong
    on = Images("test", first_wrong, min(first_wrong + 20, len(right)))
    assert problem.held_out("cheap", on).reference.clean_acc == pytest.approx(float(right[on.start : on.stop].float().mean()))


def test_sensitivity_observation_extends_v0_and_passes_check_env(cache_dir: Path) -> None:
    problem = make_problem(EnvConfig(observation="v1"), cache_dir=cache_dir)
    env = MixedPrecisionEnv(problem=problem)
    check_env(env, skip_render_check=True)
    assert OBSERVATION_FEATURES["v0"] == OBS_FEATURES and env.features[: len(OBS_FEATURES)] == OBS_FEATURES
    obs, _ = env.reset()
    assert obs.shape == (len(OBS_FEATURES) + 4,) and obs[-1] == 0.0
    used = []
    for _ in range(env.num_layers):
        obs, *_ = env.step(np.array([-1.0, -1.0], dtype=np.float32))
        used.append(float(obs[-1]))
    assert used == sorted(used) and used[-1] == pytest.approx(1.0)  # every layer at its worst pair: all the error


def test_an_evaluator_measures_the_float_reference_only_when_asked(problem: SearchProblem) -> None:
    """A pool's workers build evaluators for the policies they are sent; the reference (with the full
    evaluator, attacks on the float model) is measured once, by the worker the driver asks."""
    passes: list[int] = []
    hook = problem.workload.model.register_forward_pre_hook(lambda _m, _i: passes.append(1))
    try:
        ev = problem.held_out("cheap", Images("test", 0, 60))
        built = len(passes)
        first = ev.reference
        asked = len(passes)
        assert ev.reference is first
    finally:
        hook.remove()
    assert built == 0 and asked > 0 and len(passes) == asked
