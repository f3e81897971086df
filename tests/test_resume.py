"""Resume: a search killed with SIGKILL at a chosen write point continues with no gap and no
duplicate episode and logs what an uninterrupted search logs, and the one checkpoint core
(haq.runs.checkpoint) resumes every proposer the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from run_helpers import episode_log

from haq.baselines import BaselineConfig, run_baseline
from haq.cli import main
from haq.core.errors import RunDirError
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.quant import QuantPolicy
from haq.runs.checkpoint import RunStore
from haq.runs.proposer import RunResult
from haq.runs.rundir import RunDir
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.transfer import TransferConfig, run_transfer, transfer_env


def _config(episodes: int) -> SearchConfig:
    return SearchConfig(env=EnvConfig(), agent=AgentConfig(warmup_episodes=2), episodes=episodes, seed=0)


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def _indices(run: Path) -> list[int]:
    return [json.loads(line)["episode"] for line in (run / "episodes.jsonl").read_text().splitlines()]


KILL_AT = 3
"""The episode a killed search is killed in (after the warm-up, so the agent has learned)."""
SEARCH = ["search", "--evaluator", "cheap", "--episodes", "6", "--warmup", "2", "--seed", "0"]
_KILLED_SEARCH = """
import os, signal, sys
from haq.runs import checkpoint
point, episode = sys.argv[1], int(sys.argv[2])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "before-log":  # the episode's checkpoint is in place, its log line is not
    append = checkpoint.RunDir.append_episode
    def killed_append(self, record):
        if record.episode == episode:
            die()
        append(self, record)
    checkpoint.RunDir.append_episode = killed_append
else:  # "mid-checkpoint": every file of the new checkpoint is written but its manifest
    manifest = checkpoint.write_manifest
    def killed_manifest(directory):
        if directory.name == f"ep-{episode + 1:06d}.tmp":
            die()
        return manifest(directory)
    checkpoint.write_manifest = killed_manifest
from haq.cli import main
sys.exit(main(sys.argv[3:]))
"""
"""Runs a search (the arguments after the kill point) that SIGKILLs itself at a chosen write point:
where it dies is fixed, not a matter of timing."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> list[dict[str, object]]:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert main([*SEARCH, "--out", str(run)]) == 0
    return episode_log(run)


@pytest.mark.parametrize("point", ["before-log", "mid-checkpoint"])
def test_sigkill_then_resume_logs_what_an_uninterrupted_search_logs(
    tmp_path: Path,
    cache_dir: Path,
    uninterrupted: list[dict[str, object]],
    point: str,
) -> None:
    """Killed between its checkpoint and its log line, or while writing the checkpoint, a search
    resumes with no gap and no duplicate, and (agent, replay buffer, RNG and noise states restored,
    the owed update made) goes on exactly as the search that was never killed."""
    run = tmp_path / "run"
    env = {**os.environ, "HAQ_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_SEARCH, point, str(KILL_AT), *SEARCH, "--out", str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert _indices(run) == list(range(KILL_AT))
    assert main([*SEARCH, "--out", str(run), "--resume"]) == 0
    assert _indices(run) == list(range(6))
    assert episode_log(run) == uninterrupted


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
    doc = json.loads((run / "config.json").read_text())
    del doc["config"]["env"]["projection"]  # a setting whose absence declares no meaning, as an older haq wrote it
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match=r"before env\.projection existed, and what that haq did without it is not recorded"):
        run_search(_config(2), problem, run, resume=True)


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
