"""Resume: a search killed with SIGKILL mid-run continues with no gap and no duplicate episode, and
the one checkpoint core (haq.runs.checkpoint) resumes every proposer the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from haq.baselines import BaselineConfig, run_baseline
from haq.commands.problems import make_problem
from haq.core.errors import RunDirError
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.quant import QuantPolicy
from haq.runs.checkpoint import RunStore
from haq.runs.proposer import RunResult
from haq.runs.rundir import RunDir
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.transfer import TransferConfig, run_transfer, transfer_env

EPISODES = 10


def _config(episodes: int = EPISODES) -> SearchConfig:
    return SearchConfig(env=EnvConfig(), agent=AgentConfig(warmup_episodes=2), episodes=episodes, seed=0)


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def _indices(run: Path) -> list[int]:
    return [json.loads(line)["episode"] for line in (run / "episodes.jsonl").read_text().splitlines()]


def _lines(run: Path) -> int:
    path = run / "episodes.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def test_sigkill_mid_run_then_resume_has_no_gap_or_duplicate(tmp_path: Path, cache_dir: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "haq.cli", "search", "--evaluator", "cheap", "--episodes", str(EPISODES),
           "--warmup", "2", "--seed", "0", "--out", str(run)]
    env = {**os.environ, "HAQ_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _lines(run) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "search exited early"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _lines(run)
    assert 4 <= killed_at < EPISODES
    result = run_search(_config(), problem, run, resume=True)
    assert _indices(run) == list(range(EPISODES))
    assert result.episodes_done == EPISODES and result.resumed_from >= killed_at - 1


def test_log_behind_checkpoint_is_restored_and_torn_line_dropped(tmp_path: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    run_search(_config(4), problem, run)
    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    (run / "episodes.jsonl").write_text("".join(lines[:3]) + lines[3][:20])  # last line torn mid-write
    assert len(RunDir(run).read_episodes()) == 3
    run_search(_config(6), problem, run, resume=True)
    assert _indices(run) == list(range(6))
    assert (run / "episodes.jsonl").read_text().splitlines()[3] == lines[3].rstrip("\n")


def test_resume_refuses_a_different_config(tmp_path: Path, cache_dir: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    run_search(_config(2), problem, run)
    other = SearchConfig(env=EnvConfig(min_bits=3), agent=AgentConfig(warmup_episodes=2), episodes=2)
    with pytest.raises(RunDirError, match="min_bits=2.*min_bits=3"):
        run_search(other, make_problem(other.env, cache_dir=cache_dir), run, resume=True)
    with pytest.raises(RunDirError, match="--resume"):
        run_search(_config(2), problem, run)
    with pytest.raises(RunDirError, match="as a baseline: it holds a 'search' run"):
        run_baseline(BaselineConfig(method="random", evaluations=2), problem, run, resume=True)


def _proposers(tmp_path: Path, cache_dir: Path, problem: SearchProblem) -> dict[str, Callable[[Path, bool], RunResult]]:
    """Each proposer as ``run(out, resume)``, three episodes long (the transfer's source is a short DDPG search)."""
    source = tmp_path / "source"
    search = SearchConfig(agent=AgentConfig(algo="ddpg", warmup_episodes=1, hidden=(16,)), episodes=3, seed=0)
    transfer = TransferConfig(source=str(source), table="bismo-edge", episodes=2)
    baseline = BaselineConfig(method="random", evaluations=3, seed=0)

    def run_transfer_(out: Path, resume: bool) -> RunResult:
        if not source.exists():
            run_search(search, problem, source)
        return run_transfer(transfer, make_problem(transfer_env(transfer), cache_dir=cache_dir), out, resume=resume)

    return {
        "search": lambda out, resume: run_search(search, problem, out, resume=resume),
        "baseline": lambda out, resume: run_baseline(baseline, problem, out, resume=resume),
        "transfer": run_transfer_,
    }


@pytest.mark.parametrize("kind", ["search", "baseline", "transfer"])
def test_one_checkpoint_core_resumes_every_proposer(tmp_path: Path, cache_dir: Path, problem: SearchProblem, kind: str) -> None:
    run = tmp_path / kind
    propose = _proposers(tmp_path, cache_dir, problem)[kind]
    first = propose(run, False)
    assert first.kind == kind and first.episodes_done == 3 and first.resumed_from == 0
    checkpoint = RunStore(run).latest()  # the generic core reads every proposer's checkpoint
    assert checkpoint is not None and checkpoint.episodes_done == 3 and checkpoint.last_record == first.records[-1]
    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    (run / "episodes.jsonl").write_text("".join(lines[:2]) + lines[2][:15])  # killed after the checkpoint, mid-line
    again = propose(run, True)
    assert again.resumed_from == 3, "the last episode is restored from the checkpoint, not re-run"
    assert (run / "episodes.jsonl").read_text() == "".join(lines) and again.records == first.records
    assert again.best == first.best and QuantPolicy.load(run / "best_policy.json").meta["episode"] == first.best.episode
