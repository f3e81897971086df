"""Shared fixtures: one torch thread, one model cache per test session, the trained default workload,
and derandomized Hypothesis.

No test may read or write the user's cache (``~/.cache/haq`` or their ``$HAQ_CACHE_DIR``): a
session-scoped autouse fixture points ``HAQ_CACHE_DIR`` at a fresh temporary directory before
any test runs, so a result never depends on what an earlier run left behind and the zoo models
are trained at most once per session. ``HAQ_TEST_CACHE_DIR`` opts in to reusing a directory
across runs (local speed only; CI leaves it unset). Tests of the cache itself use their own
``tmp_path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch
from hypothesis import HealthCheck, settings

from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig, RewardConfig
from haq.problem.problem import SearchProblem
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.workload import Workload, WorkloadConfig, load_workload

torch.set_num_threads(1)

# Derandomized by default (the same examples on every run and under any load; no example
# database carried between runs); HYPOTHESIS_PROFILE=explore searches with fresh randomness.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's model cache, exported as ``HAQ_CACHE_DIR`` for code that reads the environment."""
    opted_in = os.environ.get("HAQ_TEST_CACHE_DIR")
    path = Path(opted_in) if opted_in else tmp_path_factory.mktemp("haq-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HAQ_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def digits_workload(cache_dir: Path, cpu: torch.device) -> Workload:
    """The embedded default: the digits CNN trained on sklearn digits (cached)."""
    return load_workload(WorkloadConfig(), cpu, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def two_workers(cache_dir: Path) -> Iterator[SearchProblem]:
    """The embedded default evaluated on 2 Ray workers (one pool per module: 2 CPUs hold 2 actors);
    modules that use it skip without Ray (``pytest.importorskip("ray")``)."""
    from haq.jobs.problems import make_problem

    problem = make_problem(EnvConfig(), cache_dir=cache_dir, workers=2)
    yield problem
    problem.close()


@pytest.fixture(scope="session")
def rung_source(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A search long enough to evaluate two prior rungs and centre its agent on the better one
    (the cheaper, since cost weighs heavily here): the source the transfer tests read, never write."""
    out = tmp_path_factory.mktemp("rung-source") / "run"
    agent = AgentConfig(algo="td3", hidden=(16,), gradient_steps=2, prior_rungs=2)
    env = EnvConfig(evaluation=EvalConfig(kind="cheap", val_samples=120), reward=RewardConfig(cost_weight=2.0))
    cfg = SearchConfig(env=env, agent=agent, episodes=20, seed=0)
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), out)
    return out
