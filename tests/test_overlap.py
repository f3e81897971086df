"""Updates made while the next batch is scored: the deferred update samples only the transitions
stored when it was owed, the vectorized environment runs the driver's work exactly once per scored
batch, and the agent config decides when a search defers."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch
from search_fakes import AnalyticTable, FakeEvaluator
from stable_baselines3 import TD3

from envs.vector import MixedPrecisionVecEnv
from haq.core.errors import InternalError
from haq.evaluation.config import EvalConfig
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.search.agents import make_agent
from haq.search.config import AgentConfig
from haq.search.overlap import DeferredUpdates
from haq.workload import Workload


@pytest.fixture()
def counted(digits_workload: Workload) -> tuple[SearchProblem, FakeEvaluator]:
    fake = FakeEvaluator()
    cfg = EnvConfig(table="analytic-test")
    return build_problem(cfg, table=AnalyticTable(), workload=digits_workload, evaluator_factory=lambda kind: fake), fake


def _weights(model: TD3) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.policy.parameters()]


def _fill(model: TD3, rows: int, value: float) -> None:
    """Append ``rows`` complete one-step episodes whose observations and rewards are ``value``."""
    buffer = model.replay_buffer
    assert buffer is not None
    n, dim = buffer.n_envs, buffer.obs_shape[0]
    for _ in range(rows):
        obs = np.full((n, dim), value, dtype=np.float32)
        act = np.zeros((n, buffer.action_dim), dtype=np.float32)
        buffer.add(obs, obs, act, np.full(n, value, dtype=np.float32), np.ones(n, dtype=bool), [{} for _ in range(n)])


def test_a_deferred_update_samples_only_what_was_stored_when_it_was_owed(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, _ = counted
    vec = MixedPrecisionVecEnv(problem, 2)
    model = make_agent(AgentConfig(algo="td3"), vec, vec.num_layers, 40, seed=0)
    assert isinstance(model, TD3) and model.replay_buffer is not None
    buffer = model.replay_buffer
    sampled: list[np.ndarray] = []
    read = buffer._get_samples  # noqa: SLF001 - spied on: which rows an update reads

    def spy(batch_inds: np.ndarray, env: object = None) -> object:
        sampled.append(batch_inds.copy())
        return read(batch_inds, env)  # type: ignore[arg-type]

    buffer._get_samples = spy  # type: ignore[method-assign]  # noqa: SLF001
    deferred = DeferredUpdates(model)
    deferred.install()
    _fill(model, 20, 0.5)
    model.train(gradient_steps=8, batch_size=16)  # what learn() calls after a batch: now only owed
    before = _weights(model)
    assert deferred.steps == 8 and deferred.upto == 20 and not sampled
    _fill(model, 5, 0.25)  # the next batch's unfinished steps
    deferred.pay()
    after = _weights(model)
    assert deferred.steps == 0 and buffer.pos == 25
    assert len(sampled) == 8 and max(int(b.max()) for b in sampled) < 20
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # the update was made
    deferred.pay()  # nothing owed: nothing happens
    assert len(sampled) == 8 and all(torch.equal(a, b) for a, b in zip(after, _weights(model)))
    deferred.uninstall()
    assert "train" not in vars(model) and model.train.__func__ is TD3.train  # type: ignore[attr-defined]


def test_an_update_owed_twice_makes_the_first_before_recording_the_second(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, _ = counted
    vec = MixedPrecisionVecEnv(problem, 1)
    model = make_agent(AgentConfig(algo="td3"), vec, vec.num_layers, 40, seed=0)
    deferred = DeferredUpdates(model)
    deferred.install()
    _fill(model, 10, 0.5)
    model.train(gradient_steps=4, batch_size=8)
    updates = model._n_updates  # noqa: SLF001 - counts the gradient steps made
    _fill(model, 3, 0.25)
    model.train(gradient_steps=6, batch_size=8)
    assert model._n_updates == updates + 4 and (deferred.steps, deferred.upto) == (6, 13)  # noqa: SLF001


def test_a_deferred_update_refuses_a_buffer_that_wrapped_around(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, _ = counted
    vec = MixedPrecisionVecEnv(problem, 1)
    model = make_agent(AgentConfig(algo="td3"), vec, vec.num_layers, 1, seed=0)
    assert model.replay_buffer is not None
    model.replay_buffer.full = True
    with pytest.raises(InternalError, match="wrapped around"):
        DeferredUpdates(model).owe(4, 8)


def _episode(vec: MixedPrecisionVecEnv) -> None:
    vec.reset()
    for _ in range(vec.num_layers):
        vec.step(np.zeros((vec.num_envs, 2), dtype=np.float32))


def test_driver_work_runs_once_per_batch_before_in_process_scoring(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, fake = counted
    vec = MixedPrecisionVecEnv(problem, 2)
    seen: list[int] = []
    vec.while_scoring = lambda: seen.append(len(fake.batches))
    _episode(vec)
    _episode(vec)
    # once per batch, the first time before it was evaluated; the second batch repeats the first's
    # policy, so nothing is evaluated, and the work runs all the same
    assert seen == [0, 1] and fake.batches == [1]


def test_driver_work_runs_beside_a_pool_and_its_failure_is_raised(counted: tuple[SearchProblem, FakeEvaluator]) -> None:
    problem, _ = counted
    with_pool = dataclasses.replace(problem, pool=_NoPool())
    vec = MixedPrecisionVecEnv(with_pool, 2)
    threads: list[str] = []

    def work() -> None:
        threads.append(threading.current_thread().name)

    vec.while_scoring = work
    _episode(vec)
    assert threads == ["haq-while-scoring"]

    def fail() -> None:
        raise RuntimeError("the update failed")

    vec.while_scoring = fail
    with pytest.raises(RuntimeError, match="the update failed"):
        _episode(vec)


class _NoPool:
    """Stands for a worker pool (the problem evaluates in-process all the same)."""

    def close(self) -> None:
        pass


def test_an_agent_defers_its_updates_when_it_collects_batches_from_a_table() -> None:
    agent = AgentConfig(algo="sac")
    assert not agent.overlaps(1, hardware_feedback=False)
    assert agent.overlaps(2, hardware_feedback=False)
    assert not agent.overlaps(2, hardware_feedback=True)  # timing on this machine: the update would slow it
    assert dataclasses.replace(agent, overlap_updates=True).overlaps(1, hardware_feedback=True)
    assert not dataclasses.replace(agent, overlap_updates=False).overlaps(4, hardware_feedback=False)
    assert not AgentConfig(algo="ppo", overlap_updates=True).overlaps(4, hardware_feedback=False)


def test_overlap_is_a_config_field_that_round_trips() -> None:
    from haq.core import config as serial
    from haq.search.config import SearchConfig

    cfg = SearchConfig(env=EnvConfig(evaluation=EvalConfig(kind="cheap")), agent=AgentConfig(overlap_updates=False))
    assert serial.from_dict(SearchConfig, serial.to_dict(cfg)).agent.overlap_updates is False
    assert serial.from_dict(SearchConfig, serial.to_dict(cfg)) == cfg
