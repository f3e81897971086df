"""Parallel evaluation: batches through the evaluator cache, vectorized episodes scored together,
and Ray workers that give the in-process results, in order, even when one is killed mid-batch."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from search_fakes import AnalyticTable, FakeEvaluator

from envs.mixed_precision import MixedPrecisionEnv
from envs.vector import MixedPrecisionVecEnv
from haq.baselines.candidates import random_candidates
from haq.evaluation.evaluators import CachedEvaluator
from haq.evaluation.held_out import Images
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.workload import Workload


@pytest.fixture()
def counted(digits_workload: Workload) -> tuple[SearchProblem, FakeEvaluator]:
    fake = FakeEvaluator()
    cfg = EnvConfig(table="analytic-test")
    return build_problem(cfg, table=AnalyticTable(), workload=digits_workload, evaluator_factory=lambda kind: fake), fake


def test_cached_batches_evaluate_each_distinct_miss_once(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, fake = counted
    pols = [problem.policy(c.pairs) for c in random_candidates(problem.budget_model, 4, np.random.default_rng(0), "stepwise")]
    batch = [pols[0], pols[1], pols[0], pols[2]]
    scored = problem.score_many(batch)
    assert fake.batches == [3]
    assert [s.cached for s in scored] == [False, False, True, False]
    assert (scored[2].metrics, scored[2].reward) == (scored[0].metrics, scored[0].reward)
    again = problem.score_many([pols[3], pols[1]])
    assert fake.batches == [3, 1] and [s.cached for s in again] == [False, True]
    assert [s.fidelity for s in scored + again] == ["cheap"] * 6


def test_vectorized_episodes_are_scored_as_one_batch_like_single_episodes(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, fake = counted
    vec = MixedPrecisionVecEnv(problem, 3)
    vec.reset()
    rng = np.random.default_rng(1)
    actions = [rng.uniform(-1, 1, (3, 2)).astype(np.float32) for _ in range(vec.num_layers)]
    for a in actions:
        _, rewards, dones, infos = vec.step(a)
    assert dones.all() and fake.batches == [3]
    assert all("terminal_observation" in i and i["fidelity"] == "cheap" for i in infos)
    single = MixedPrecisionEnv(problem=problem)
    for k in range(3):
        single.reset()
        for a in actions:
            _, reward, done, _, info = single.step(a[k])
        assert done and reward == pytest.approx(rewards[k]) and info["policy"] == infos[k]["policy"]


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def pool(two_workers: SearchProblem) -> object:
    return two_workers.pool


@pytest.fixture(scope="module")
def default_problem(cache_dir: Path) -> SearchProblem:
    from haq.jobs.problems import make_problem

    return make_problem(EnvConfig(), cache_dir=cache_dir)


def test_workers_give_the_in_process_results_in_order(pool: object, default_problem: SearchProblem) -> None:
    from haq.parallel.ray_pool import RayPool

    assert isinstance(pool, RayPool)
    pols = [
        default_problem.policy(c.pairs)
        for c in random_candidates(default_problem.budget_model, 6, np.random.default_rng(2), "stepwise")
    ]
    local = CachedEvaluator(default_problem.evaluator).evaluate_many(pols)
    remote = pool.evaluator("cheap").evaluate_many(pols)
    assert [m.clean_acc for m in remote] == [m.clean_acc for m in local]
    assert [m.latency_ms for m in remote] == [m.latency_ms for m in local]
    assert pool.reference("cheap") == default_problem.evaluator.reference
    assert len(set(pool.pids())) == 2


def test_a_killed_worker_is_replaced_and_its_policy_evaluated_again(pool: object, default_problem: SearchProblem) -> None:
    from haq.parallel.ray_pool import RayPool

    assert isinstance(pool, RayPool)
    # ~2 s of evaluations: the worker is killed mid-batch
    candidates = random_candidates(default_problem.budget_model, 96, np.random.default_rng(3), "stepwise")
    pols = [default_problem.policy(c.pairs) for c in candidates]
    expected = [m.clean_acc for m in CachedEvaluator(default_problem.evaluator).evaluate_many(pols)]
    victim = pool.pids()[0]
    before = pool.replaced

    def kill() -> None:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    got = pool.evaluator("cheap").evaluate_many(pols)
    killer.join()
    assert [m.clean_acc for m in got] == expected  # nothing lost, nothing twice, in order
    assert pool.replaced == before + 1 and victim not in pool.pids()


def test_the_final_pick_rescores_on_the_workers_as_in_process(
    two_workers: SearchProblem, default_problem: SearchProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haq.parallel.ray_pool import RayPool
    from haq.problem.select import pick_final

    pool = two_workers.pool
    assert isinstance(pool, RayPool)
    cands = random_candidates(default_problem.budget_model, 6, np.random.default_rng(5), "stepwise")
    candidates = [(default_problem.policy(c.pairs), float(-i)) for i, c in enumerate(cands)]
    batches: list[tuple[str, int]] = []
    real = pool.evaluate_many

    def spy(kind: str, policies: object, images: object = None, seed: int | None = None) -> object:
        batches.append((str(images), len(policies), seed))  # type: ignore[arg-type]
        return real(kind, policies, images, seed)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "evaluate_many", spy)
    remote = pick_final(two_workers, candidates, k=4, select_samples=100, seeds=2)
    local = pick_final(default_problem, candidates, k=4, select_samples=100, seeds=2)
    assert (remote.index, remote.select_rewards, remote.test_reward) == (local.index, local.select_rewards, local.test_reward)
    assert dataclasses.replace(remote.test, eval_seconds=0.0) == dataclasses.replace(local.test, eval_seconds=0.0)
    # the top 4 in one batch, on the pool; one report: the cheap evaluator scores the same under any seed
    assert batches == [(remote.select_images, 4, None), (remote.test_images, 1, None)] and len(remote.by_seed) == 1


def test_a_seeded_held_out_evaluator_on_the_workers_is_the_in_process_one(
    two_workers: SearchProblem, default_problem: SearchProblem
) -> None:
    images = Images("test", 0, 90)
    policy = default_problem.policy([(3, 4)] * len(default_problem.layer_names))
    scores = {}
    for seed in (None, 101):
        remote, local = two_workers.held_out("full", images, seed), default_problem.held_out("full", images, seed)
        scores[seed] = [(m.clean_acc, m.robust_acc) for m in (remote.evaluate(policy), local.evaluate(policy))]
        assert remote.reference == local.reference
    assert scores[None][0] == scores[None][1] and scores[101][0] == scores[101][1]
    assert scores[None][0] != scores[101][0]  # the seed reached the worker's fine-tune


def test_a_measured_sensitivity_spread_over_the_workers_is_the_in_process_one(
    two_workers: SearchProblem, default_problem: SearchProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from haq.evaluation.evaluators import attack_config
    from haq.parallel.ray_pool import RayPool
    from haq.problem.measured_sensitivity import LossWeights, measure_sensitivity
    from haq.problem.reward_sensitivity import reward_sensitivity
    from haq.problem.sensitivity import SensitivityConfig

    pool = two_workers.pool
    assert isinstance(pool, RayPool)
    shares: list[object] = []
    real = pool.map_workload

    def spy(fn: object, args: list[tuple[object, ...]], done: object = None) -> object:
        shares.extend(a[-1] for a in args)
        return real(fn, args, done)  # type: ignore[arg-type]

    monkeypatch.setattr(pool, "map_workload", spy)
    env = dataclasses.replace(EnvConfig(), evaluation=dataclasses.replace(EnvConfig().evaluation, kind="full"))
    cfg = SensitivityConfig(estimator="measured", samples=64)
    said: list[str] = []
    remote = reward_sensitivity(env, two_workers.workload, cfg, said.append, pool)
    w = default_problem.workload
    weights = LossWeights(env.reward.acc_weight, env.reward.robust_weight, attack_config(env.evaluation, w.config.seed))
    local = measure_sensitivity(w.model, w.layers, w.data, w.device, weights, cfg)
    names = [layer.name for layer in w.layers]
    assert remote == local and list(remote.layers) == names  # the same figures, in layer order
    assert sorted(n for share in shares for n in share) == sorted(names)  # type: ignore[attr-defined]
    assert len(shares) == 2
    assert said[0] == f"measured sensitivity: {len(names)} layers in {len(shares)} shares on 2 workers"
    # progress as each share arrives, counted in order, the shares in whichever order the workers finish
    counted = [line.split(" (")[0] for line in said[1:]]
    assert counted == [f"measured sensitivity: {k}/{len(shares)} shares done" for k in range(1, len(shares) + 1)]
    assert sorted(line.split(" (")[1] for line in said[1:]) == sorted(f"{', '.join(share)})" for share in shares)  # type: ignore[arg-type]


def test_new_settings_reach_every_worker_and_the_replacement_of_one_that_died(
    two_workers: SearchProblem, default_problem: SearchProblem
) -> None:
    from haq.evaluation.held_out import held_out_evaluator
    from haq.parallel.ray_pool import RayPool

    pool = two_workers.pool
    assert isinstance(pool, RayPool)
    original = pool.spec.evaluation
    other = dataclasses.replace(original, finetune_lr=original.finetune_lr / 10)
    images = Images("test", 0, 90)
    policy = default_problem.policy([(3, 4)] * len(default_problem.layer_names))
    w = default_problem.workload
    local = {
        lr: held_out_evaluator(w, default_problem.table, dataclasses.replace(original, finetune_lr=lr), "full", images, None)
        for lr in (original.finetune_lr, other.finetune_lr)
    }
    victim, before = pool.pids()[0], pool.replaced
    os.kill(victim, signal.SIGKILL)
    try:
        pool.reconfigure(other)
        assert pool.replaced == before + 1 and victim not in pool.pids() and pool.spec.evaluation == other
        batch = [policy] * 2  # one on each worker, the replacement included
        got = [(m.clean_acc, m.robust_acc) for m in pool.held_out("full", images).evaluate_many(batch)]
        want = local[other.finetune_lr].evaluate(policy)
        assert got == [(want.clean_acc, want.robust_acc)] * 2
        before_rate = local[original.finetune_lr].evaluate(policy)
        assert (before_rate.clean_acc, before_rate.robust_acc) != (want.clean_acc, want.robust_acc)  # the rate shows
    finally:
        pool.reconfigure(original)
