"""Resume: a search killed with SIGKILL mid-run continues with no gap and no duplicate episode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from haq.core.errors import ConfigError
from haq.problem.config import EnvConfig
from haq.runs.rundir import RunDir
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search

EPISODES = 10


def _config(episodes: int = EPISODES) -> SearchConfig:
    return SearchConfig(env=EnvConfig(), agent=AgentConfig(warmup_episodes=2), episodes=episodes, seed=0)


def _indices(run: Path) -> list[int]:
    return [json.loads(line)["episode"] for line in (run / "episodes.jsonl").read_text().splitlines()]


def _lines(run: Path) -> int:
    path = run / "episodes.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def test_sigkill_mid_run_then_resume_has_no_gap_or_duplicate(tmp_path: Path, cache_dir: Path) -> None:
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
    result = run_search(_config(), run, cache_dir=cache_dir, resume=True)
    assert _indices(run) == list(range(EPISODES))
    assert result.episodes_done == EPISODES and result.resumed_from >= killed_at - 1


def test_log_behind_checkpoint_is_restored_and_torn_line_dropped(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    run_search(_config(4), run, cache_dir=cache_dir)
    lines = (run / "episodes.jsonl").read_text().splitlines(keepends=True)
    (run / "episodes.jsonl").write_text("".join(lines[:3]) + lines[3][:20])  # last line torn mid-write
    assert len(RunDir(run).read_episodes()) == 3
    run_search(_config(6), run, cache_dir=cache_dir, resume=True)
    assert _indices(run) == list(range(6))
    assert (run / "episodes.jsonl").read_text().splitlines()[3] == lines[3].rstrip("\n")


def test_resume_refuses_a_different_config(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    run_search(_config(2), run, cache_dir=cache_dir)
    other = SearchConfig(env=EnvConfig(min_bits=3), agent=AgentConfig(warmup_episodes=2), episodes=2)
    with pytest.raises(ConfigError, match="min_bits=2.*min_bits=3"):
        run_search(other, run, cache_dir=cache_dir, resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        run_search(_config(2), run, cache_dir=cache_dir)
