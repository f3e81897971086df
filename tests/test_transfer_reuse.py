"""A transfer reuses its source's evaluations, re-priced on the new device: the same accuracies,
the new table's costs and budget, replayed into the agent's buffer without a single evaluation,
and refused where the accuracies would not hold."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.errors import ConfigError
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import PolicyCosts
from haq.evaluation.metrics import PolicyMetrics
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.agents import restore_agent
from haq.search.checkpoint import AgentStore
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.transfer.config import TransferConfig
from haq.transfer.experience import reachable, reprice, why_not_reused
from haq.transfer.run import REUSED, run_transfer, transfer_env
from haq.transfer.start import STARTED_FROM

CHEAP = EvalConfig(kind="cheap", val_samples=120)


@pytest.fixture(scope="module")
def td3_source(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short uncentred TD3 search of the digits CNN on Bit Fusion (no reward baseline, no cost credit)."""
    out = tmp_path_factory.mktemp("reuse-source") / "run"
    env = EnvConfig(evaluation=CHEAP, action_prior="uniform")
    cfg = SearchConfig(env=env, agent=AgentConfig(algo="td3", warmup_episodes=4, hidden=(16,), gradient_steps=2), episodes=8)
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), out)
    return out


def test_a_repriced_evaluation_keeps_its_accuracies_and_takes_the_new_devices_cost(td3_source: Path, cache_dir: Path) -> None:
    records = RunDir(td3_source).read_episodes()
    target = make_problem(transfer_env(TransferConfig(source=str(td3_source), table="bismo-edge")), cache_dir=cache_dir)
    repriced = reprice(records, target)
    assert repriced, "some of the source's policies fit the new budget"
    by_episode = {r.episode: r for r in records}
    costs = PolicyCosts(target.workload.layers, target.table, target.table)
    for r in repriced:
        source = by_episode[r.source_episode]
        m = r.scored.metrics
        assert (m.clean_acc, m.robust_acc) == (source.metrics.clean_acc, source.metrics.robust_acc)
        latency, energy, _ = costs.costs(target.policy(r.pairs))
        assert (m.latency_ms, m.energy_mj) == (latency, energy) and m.latency_ms != source.metrics.latency_ms
        assert r.scored.reward == pytest.approx(target.reward(m, target.evaluator.reference))
        assert target.budget_model.fits(target.budget_model.policy_cost(r.pairs)) and reachable(target, r.pairs)
    assert len({r.pairs for r in repriced}) == len(repriced)


def test_a_repriced_evaluation_is_what_evaluating_it_on_the_new_device_gives(td3_source: Path, cache_dir: Path) -> None:
    records = RunDir(td3_source).read_episodes()
    env = transfer_env(TransferConfig(source=str(td3_source), table="bismo-edge"))
    repriced = reprice(records, make_problem(env, cache_dir=cache_dir))
    fresh = make_problem(env, cache_dir=cache_dir)  # an empty evaluator cache
    for r in repriced[:3]:
        scored = fresh.score(fresh.policy(r.pairs))
        assert not scored.cached and scored.reward == r.scored.reward
        assert dataclasses.replace(scored.metrics, eval_seconds=0.0) == r.scored.metrics


def test_a_policy_over_the_new_budget_or_unsupported_there_is_not_reused(td3_source: Path, cache_dir: Path) -> None:
    target = make_problem(transfer_env(TransferConfig(source=str(td3_source), table="bismo-edge")), cache_dir=cache_dir)
    names = target.layer_names
    metrics = PolicyMetrics(0.9, None, 1.0, None, 1)
    top = {n: (8, 8) for n in names}  # uniform 8 bits: twice the budget
    low = {n: (c.pairs[0][0], c.pairs[0][1]) for n, c in zip(names, target.budget_model.layers)}
    odd = {**low, names[0]: (3, 31)}  # no such pair
    records = [EpisodeRecord(i, p, metrics, 0.0) for i, p in enumerate((top, low, odd, low))]
    assert [r.source_episode for r in reprice(records, target)] == [1]


def test_the_agent_learns_from_the_repriced_evaluations_without_evaluating_them(
    td3_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    cfg = TransferConfig(source=str(td3_source), table="bismo-edge", episodes=0)
    problem = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    expected = reprice(RunDir(td3_source).read_episodes(), problem)
    calls: list[int] = []
    inner = problem.evaluator._inner  # noqa: SLF001 - counting the real evaluations
    real = inner.evaluate_many

    def counted(policies: list[object]) -> list[PolicyMetrics]:
        calls.append(len(policies))
        return real(policies)  # type: ignore[arg-type]

    inner.evaluate_many = counted  # type: ignore[method-assign]
    result = run_transfer(cfg, problem, tmp_path / "t")
    zero = result.records[0]
    assert zero.extra[REUSED] == len(expected) > 0
    best = max(expected, key=lambda r: r.scored.reward)
    assert [tuple(zero.policy[n]) for n in problem.layer_names] == list(best.pairs), "the actor was fitted to the best"
    assert zero.reward == pytest.approx(best.scored.reward)
    assert calls == [], "nothing was evaluated: the zero-shot policy is a re-priced one"
    checkpoint = AgentStore(tmp_path / "t").latest()
    assert checkpoint is not None
    model, _, _ = restore_agent(checkpoint.path, MixedPrecisionEnv(problem=problem), with_buffer=True)
    layers = len(problem.layer_names)
    buffer = model.replay_buffer
    assert buffer is not None and buffer.pos == len(expected) * layers
    finals = buffer.rewards[layers - 1 : buffer.pos : layers, 0]
    assert finals.tolist() == pytest.approx([r.scored.reward for r in expected])
    assert model._n_updates > 0  # noqa: SLF001 - it learned before acting


def test_the_agent_alone_when_asked_or_when_the_accuracies_would_not_hold(
    td3_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    alone = TransferConfig(source=str(td3_source), table="bismo-edge", episodes=0, reuse_source=False)
    assert (
        run_transfer(alone, make_problem(transfer_env(alone), cache_dir=cache_dir), tmp_path / "a").records[0].extra[REUSED] == 0
    )
    other = TransferConfig(source=str(td3_source), table="bismo-edge", episodes=0, model="digits_mlp")
    lines: list[str] = []
    result = run_transfer(other, make_problem(transfer_env(other), cache_dir=cache_dir), tmp_path / "m", log=lines.append)
    assert result.records[0].extra[REUSED] == 0
    assert any("not reused: another workload" in line for line in lines)
    env = transfer_env(TransferConfig(source=str(td3_source), table="bismo-edge"))
    assert why_not_reused(env, env) is None
    full = dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, kind="full"))
    assert why_not_reused(env, full) == "another evaluator"
    multi = dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, kind="multi"))
    assert "multi-fidelity" in str(why_not_reused(multi, multi))


def test_without_cloning_the_actor_learns_from_the_critic(td3_source: Path, tmp_path: Path, cache_dir: Path) -> None:
    cfg = TransferConfig(source=str(td3_source), table="bismo-edge", episodes=0, clone_steps=0)
    problem = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    lines: list[str] = []
    zero = run_transfer(cfg, problem, tmp_path / "t", log=lines.append).records[0]
    assert zero.extra[REUSED] > 0 and any("actor learning from the critic" in line for line in lines)
    assert STARTED_FROM not in zero.extra  # the actor was fitted to nothing
    source = AgentStore(td3_source).latest()
    tuned = AgentStore(tmp_path / "t").latest()
    assert source is not None and tuned is not None
    env = MixedPrecisionEnv(problem=problem)
    before = restore_agent(source.path, env, with_buffer=False)[0].actor.state_dict()
    after = restore_agent(tuned.path, env, with_buffer=False)[0].actor.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ConfigError, match="clone_steps"):
        dataclasses.replace(cfg, clone_steps=-1)


def test_a_transfer_that_lost_its_checkpoint_relearns_the_reused_evaluations(
    td3_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "t"
    cfg = TransferConfig(source=str(td3_source), table="bismo-edge", episodes=0)
    zero = run_transfer(cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir), out).records[0]
    shutil.rmtree(out / "checkpoint")
    more = dataclasses.replace(cfg, episodes=2)
    problem = make_problem(transfer_env(more), cache_dir=cache_dir)
    result = run_transfer(more, problem, out, resume=True)
    assert [r.episode for r in result.records] == [0, 1, 2] and result.records[0].policy == zero.policy
    checkpoint = AgentStore(out).latest()
    assert checkpoint is not None
    model = restore_agent(checkpoint.path, MixedPrecisionEnv(problem=problem), with_buffer=True)[0]
    assert model.replay_buffer is not None
    assert model.replay_buffer.pos == (zero.extra[REUSED] + 2) * len(problem.layer_names)
