"""Parallel and multi-fidelity runs end to end: a 2-worker search gives the same log twice, resumes
with any worker count, a baseline submits batches and loses nothing to a killed worker, and a
multi-fidelity search logs which fidelity scored each episode."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from run_helpers import episode_log, interrupted_search, with_empty_cache

from haq.evaluation.config import EvalConfig
from haq.problem.config import EnvConfig
from haq.problem.fidelity import FULL
from haq.problem.problem import SearchProblem

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def default_problem(cache_dir: Path) -> SearchProblem:
    from haq.jobs.problems import make_problem

    return make_problem(EnvConfig(), cache_dir=cache_dir)


def test_a_two_worker_search_gives_the_same_log_twice(two_workers: SearchProblem, tmp_path: Path) -> None:
    from haq.search.config import AgentConfig, SearchConfig
    from haq.search.run import run_search

    cfg = SearchConfig(agent=AgentConfig(decision="layer", warmup_episodes=2), episodes=6, seed=1)
    logs = []
    for k in range(2):
        result = run_search(cfg, with_empty_cache(two_workers), tmp_path / str(k))
        assert [r.episode for r in result.records] == list(range(6))
        logs.append(episode_log(tmp_path / str(k)))
    assert logs[0] == logs[1]
    assert all(e["extra"] == {"fidelity": "cheap"} for e in logs[0])


def test_resume_works_with_any_worker_count(two_workers: SearchProblem, default_problem: SearchProblem, tmp_path: Path) -> None:
    from haq.search.config import AgentConfig, SearchConfig
    from haq.search.run import run_search

    cfg = SearchConfig(agent=AgentConfig(warmup_episodes=2), episodes=8, seed=2)
    run_search(cfg, two_workers, tmp_path / "whole")
    interrupted_search(cfg, two_workers, tmp_path / "same", after=3)
    resumed = run_search(cfg, two_workers, tmp_path / "same", resume=True)
    # exact on the same workers
    assert resumed.resumed_from == 4 and episode_log(tmp_path / "same") == episode_log(tmp_path / "whole")
    interrupted_search(cfg, two_workers, tmp_path / "other", after=3)
    other = run_search(cfg, default_problem, tmp_path / "other", resume=True)  # in-process now, still in batches of 2
    # The same log: evaluation draws no random numbers of the driver's, and the update owed for a
    # batch is made before the next batch is scored in-process, where the workers' run made it
    # while the batch was scored (haq.search.overlap).
    assert other.resumed_from == 4 and episode_log(tmp_path / "other") == episode_log(tmp_path / "whole")


def test_a_baseline_submits_batches_and_loses_nothing_to_a_killed_worker(two_workers: SearchProblem, tmp_path: Path) -> None:
    from haq.baselines import BaselineConfig, run_baseline
    from haq.parallel.ray_pool import RayPool

    pool = two_workers.pool
    assert isinstance(pool, RayPool)
    victim, before = pool.pids()[1], pool.replaced

    def kill() -> None:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    result = run_baseline(BaselineConfig(method="random", evaluations=60, seed=4), two_workers, tmp_path / "random")
    killer.join()
    assert pool.replaced == before + 1
    assert [r.episode for r in result.records] == list(range(60))
    assert [e["episode"] for e in episode_log(tmp_path / "random")] == list(range(60))  # nothing lost, nothing twice


def test_a_multi_fidelity_search_logs_which_fidelity_scored_each_episode(cache_dir: Path, tmp_path: Path) -> None:
    from haq.jobs.problems import make_problem
    from haq.problem.config import EnvConfig
    from haq.search.config import AgentConfig, SearchConfig
    from haq.search.run import run_search

    evaluation = EvalConfig(kind="multi", screen_calibration=3, screen_min_fraction=0.0, robust_samples=20, finetune_batches=2)
    env = EnvConfig(evaluation=evaluation)
    problem = make_problem(env, cache_dir=cache_dir)
    result = run_search(SearchConfig(env=env, agent=AgentConfig(warmup_episodes=3), episodes=10, seed=0), problem, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    fidelities = [line["extra"]["fidelity"] for line in lines]
    assert (
        len(lines) == 10
        and set(fidelities) <= {evaluation.screen_kind, FULL}
        and fidelities[:3] == [FULL] * 3
        and evaluation.screen_kind in fidelities
    )
    assert all(isinstance(line["extra"]["cheap_reward"], float) for line in lines)
    assert all(line["robust_acc"] is not None for line in lines)  # the screen's robust term, or the full worst case
    assert problem.screen is not None and problem.screen.full_evaluations == fidelities.count(FULL) - _repeats(lines, FULL)
    assert problem.screen.allowance == 3 and problem.screen.full_evaluations <= 3  # a third of 10 episodes
    assert result.best.extra["fidelity"] == FULL  # the best is always judged in full


def test_a_multi_fidelity_search_resumes_to_the_log_of_an_uninterrupted_one(cache_dir: Path, tmp_path: Path) -> None:
    """The screen's state (calibration, best full reward, full evaluations spent against the
    allowance) comes back from the log, so a killed run goes on deciding as it would have."""
    from haq.jobs.problems import make_problem
    from haq.search.config import AgentConfig, SearchConfig
    from haq.search.run import run_search

    evaluation = EvalConfig(  # every policy could win (z 100): only the allowance screens any out
        kind="multi",
        screen_calibration=2,
        screen_z=100.0,
        screen_min_fraction=0.0,
        screen_max_fraction=0.3,
        robust_samples=20,
        finetune_batches=2,
    )
    env = EnvConfig(evaluation=evaluation)
    cfg = SearchConfig(env=env, agent=AgentConfig(warmup_episodes=3), episodes=10, seed=3)
    whole = make_problem(env, cache_dir=cache_dir)
    run_search(cfg, whole, tmp_path / "whole")
    interrupted_search(cfg, make_problem(env, cache_dir=cache_dir), tmp_path / "resumed", after=4)
    again = make_problem(env, cache_dir=cache_dir)  # a new process: nothing of the first attempt in memory
    resumed = run_search(cfg, again, tmp_path / "resumed", resume=True)
    assert resumed.resumed_from == 5 and episode_log(tmp_path / "resumed") == episode_log(tmp_path / "whole")
    assert whole.screen is not None and again.screen is not None and again.screen.allowance == 3
    assert again.screen.full_evaluations == whole.screen.full_evaluations == 3
    assert [line["extra"]["fidelity"] for line in episode_log(tmp_path / "resumed")].count(FULL) == 3


def _repeats(lines: list[dict[str, object]], fidelity: str) -> int:
    seen: set[str] = set()
    repeats = 0
    for line in lines:
        if line["extra"]["fidelity"] == fidelity:  # type: ignore[index]
            key = json.dumps(line["policy"], sort_keys=True)
            repeats += key in seen
            seen.add(key)
    return repeats
