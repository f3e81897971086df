"""A run directory is data, never code: pickles planted in a checkpoint or a transfer source are
refused with one line and never run; a checkpoint changed after it was written fails its
manifest; best_policy.json is derived from the log; and a lost checkpoint never costs a logged
episode."""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from haq.baselines import BaselineConfig, run_baseline
from haq.cli import main
from haq.core.errors import RunDirError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.quant import QuantPolicy
from haq.runs.manifest import write_manifest
from haq.runs.rundir import RunDir, best_of
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.transfer import TransferConfig, run_transfer, transfer_env

SEARCH = ["search", "--evaluator", "cheap", "--episodes", "2", "--warmup", "1", "--seed", "0"]
CHEAP = EnvConfig(evaluation=EvalConfig(kind="cheap"))


class _Payload:
    """Unpickling this creates ``marker`` (and does nothing else): proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _sb3_zip(marker: Path) -> bytes:
    """An ``agent.zip`` as stable-baselines3's ``save`` writes it, its ``lr_schedule`` a payload."""
    data = {"lr_schedule": {":type:": "<class 'function'>", ":serialized:": base64.b64encode(_pickle(marker)).decode()}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data", json.dumps(data))
        z.writestr("_stable_baselines3_version", "2.9.2")
    return buf.getvalue()


def _checkpoint(run: Path) -> Path:
    (path,) = run.glob("checkpoint/ep-*")
    return path


def _plant_replay_buffer_pkl(ckpt: Path, marker: Path) -> str:
    (ckpt / "replay_buffer.pkl").write_bytes(_pickle(marker))
    return "replay_buffer.pkl not listed in manifest.json"


def _plant_buffer_npz_pickle(ckpt: Path, marker: Path) -> str:
    (ckpt / "buffer.npz").write_bytes(_pickle(marker))
    write_manifest(ckpt)  # whoever plants a file can rewrite the hashes too
    return "not a haq replay buffer"


def _plant_agent_zip(ckpt: Path, marker: Path) -> str:
    (ckpt / "agent.zip").write_bytes(_sb3_zip(marker))
    (ckpt / "replay_buffer.pkl").write_bytes(_pickle(marker))
    return "agent.zip, replay_buffer.pkl not listed in manifest.json"


def _plant_weights_pickle(ckpt: Path, marker: Path) -> str:
    buf = io.BytesIO()
    torch.save({"params": _Payload(marker)}, buf)
    (ckpt / "agent_weights.pt").write_bytes(buf.getvalue())
    write_manifest(ckpt)
    return "not haq agent weights"


def _old_format(ckpt: Path, marker: Path) -> str:
    """The checkpoint as an older haq wrote it: agent.zip and replay_buffer.pkl, no manifest."""
    for name in ("manifest.json", "agent_state.json", "agent_weights.pt", "buffer.npz"):
        (ckpt / name).unlink()
    (ckpt / "agent.zip").write_bytes(_sb3_zip(marker))
    (ckpt / "replay_buffer.pkl").write_bytes(_pickle(marker))
    return "older haq holding pickled files (agent.zip, replay_buffer.pkl), which haq never unpickles"


PLANTS: dict[str, Callable[[Path, Path], str]] = {
    "replay_buffer.pkl": _plant_replay_buffer_pkl,
    "buffer.npz as pickle": _plant_buffer_npz_pickle,
    "agent.zip": _plant_agent_zip,
    "weights as pickle": _plant_weights_pickle,
    "old format": _old_format,
}


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-episode search written by the command line, as a user would resume or share it."""
    run = tmp_path_factory.mktemp("search") / "run"
    assert main([*SEARCH, "--out", str(run)]) == 0
    return run


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("haq: error:"), err
    return err[0]


@pytest.mark.parametrize("plant", list(PLANTS))
def test_pickle_in_a_checkpoint_never_runs_on_resume(
    search_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    plant: str,
) -> None:
    run, marker = tmp_path / "run", tmp_path / "marker"
    shutil.copytree(search_run, run)
    expected = PLANTS[plant](_checkpoint(run), marker)
    capsys.readouterr()
    code = main([*SEARCH[:4], "4", *SEARCH[5:], "--out", str(run), "--resume"])
    assert not marker.exists(), "a pickle from the run directory was executed"
    assert code == 2 and expected in _one_error_line(capsys)
    assert len(RunDir(run).read_episodes()) == 2, "a refused resume changes nothing"


@pytest.mark.parametrize("plant", ["agent.zip", "weights as pickle", "old format"])
def test_pickle_in_a_transfer_source_never_runs(
    search_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    plant: str,
) -> None:
    source, marker = tmp_path / "source", tmp_path / "marker"
    shutil.copytree(search_run, source)
    expected = PLANTS[plant](_checkpoint(source), marker)
    capsys.readouterr()
    argv = ["transfer", "--from", str(source), "--device", "bismo-edge", "--episodes", "0", "--out", str(tmp_path / "t")]
    code = main(argv)
    assert not marker.exists(), "a pickle from the transfer source was executed"
    assert code == 2 and expected in _one_error_line(capsys)
    assert not (tmp_path / "t" / "episodes.jsonl").exists()


def test_checkpoint_changed_after_writing_fails_its_manifest(search_run: Path, tmp_path: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    shutil.copytree(search_run, run)
    ckpt = _checkpoint(run)
    state = json.loads((ckpt / "agent_state.json").read_text())
    state["hyperparameters"]["learning_rate"] = 0.5  # still a valid agent state, but not the one written
    (ckpt / "agent_state.json").write_text(json.dumps(state))
    cfg = SearchConfig(env=CHEAP, agent=AgentConfig(warmup_episodes=1), episodes=3, seed=0)
    with pytest.raises(RunDirError, match=r"agent_state.json: does not match the SHA-256 in .*manifest.json"):
        run_search(cfg, problem, run, resume=True)
    (ckpt / "buffer.npz").unlink()
    write_manifest(ckpt)
    (ckpt / "agent_weights.pt").unlink()
    with pytest.raises(RunDirError, match="agent_weights.pt: listed in .* but missing"):
        run_search(cfg, problem, run, resume=True)
    (ckpt / "agent_weights.pt").symlink_to("/dev/zero")  # hashing it would never end
    with pytest.raises(RunDirError, match="agent_weights.pt: not a regular file"):
        run_search(cfg, problem, run, resume=True)


@pytest.fixture(scope="module")
def problem() -> SearchProblem:
    return make_problem(CHEAP)


def _log(run: Path) -> str:
    return (run / "episodes.jsonl").read_text()


@pytest.mark.parametrize("kind", ["search", "baseline"])
def test_best_policy_is_derived_from_the_log_on_resume_and_at_the_end(tmp_path: Path, problem: SearchProblem, kind: str) -> None:
    run = tmp_path / kind

    def propose(n: int, resume: bool, progress: Callable[..., None] | None = None) -> None:
        if kind == "search":
            cfg = SearchConfig(env=CHEAP, agent=AgentConfig(warmup_episodes=1, hidden=(16,)), episodes=n, seed=0)
            run_search(cfg, problem, run, resume=resume, progress=progress)
        else:
            run_baseline(BaselineConfig(method="random", evaluations=n, seed=0), problem, run, resume=resume, progress=progress)

    def best_file() -> QuantPolicy:
        return QuantPolicy.load(run / "best_policy.json")

    def clobber(_: object) -> None:  # best_policy.json goes wrong after each commit
        (run / "best_policy.json").write_text("{}")

    propose(3, False, clobber)
    rd = RunDir(run)
    best = best_of(rd.read_episodes())
    assert best is not None and best_file().meta["episode"] == best.episode, "derived from the log at the end"
    (run / "best_policy.json").unlink()  # killed between the log line and best_policy.json
    propose(3, True)
    assert best_file().meta["episode"] == best.episode
    worst = min(rd.read_episodes(), key=lambda r: r.reward)
    rd.write_best(worst)  # stale: an earlier best, left by a kill
    propose(3, True)
    assert best_file().meta["episode"] == best.episode and best_file().meta["reward"] == best.reward


def test_a_search_without_checkpoint_keeps_every_logged_episode(tmp_path: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    cfg = SearchConfig(env=CHEAP, agent=AgentConfig(warmup_episodes=1, hidden=(16,)), episodes=3, seed=0)
    run_search(cfg, problem, run)
    logged = _log(run)
    shutil.rmtree(run / "checkpoint")
    seen: list[str] = []
    again = run_search(cfg, problem, run, resume=True, log=seen.append)
    assert _log(run) == logged and again.resumed_from == 3 and len(again.records) == 3, "nothing re-run, nothing lost"
    shutil.rmtree(run / "checkpoint", ignore_errors=True)
    more = run_search(SearchConfig(env=CHEAP, agent=cfg.agent, episodes=5, seed=0), problem, run, resume=True, log=seen.append)
    assert _log(run).startswith(logged) and [r.episode for r in RunDir(run).read_episodes()] == [0, 1, 2, 3, 4]
    assert more.resumed_from == 3 and any("the 3 logged episodes stand" in line for line in seen)
    assert (run / "checkpoint").is_dir(), "the fresh agent checkpoints as it goes"


def test_a_log_ahead_of_its_checkpoint_is_refused_not_truncated(tmp_path: Path, problem: SearchProblem) -> None:
    run = tmp_path / "run"
    cfg = SearchConfig(env=CHEAP, agent=AgentConfig(warmup_episodes=1, hidden=(16,)), episodes=2, seed=0)
    run_search(cfg, problem, run)
    older = tmp_path / "older"
    shutil.copytree(_checkpoint(run), older)
    run_search(SearchConfig(env=CHEAP, agent=cfg.agent, episodes=3, seed=0), problem, run, resume=True)
    logged = _log(run)
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(older, run / "checkpoint" / "ep-000002")
    with pytest.raises(RunDirError, match="holds 3 episodes but the newest checkpoint .* covers 2; remove .*checkpoint"):
        run_search(SearchConfig(env=CHEAP, agent=cfg.agent, episodes=4, seed=0), problem, run, resume=True)
    assert _log(run) == logged


def test_a_transfer_without_checkpoint_keeps_its_zero_shot_episode(search_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    cfg = TransferConfig(source=str(search_run), table="bismo-edge", episodes=1)
    target = make_problem(transfer_env(cfg))
    first = run_transfer(cfg, target, out)
    logged = _log(out)
    shutil.rmtree(out / "checkpoint")
    more = run_transfer(TransferConfig(source=str(search_run), table="bismo-edge", episodes=2), target, out, resume=True)
    assert _log(out).startswith(logged) and more.resumed_from == 2
    assert more.records[:2] == first.records and more.records[0].extra["phase"] == "zero-shot"
    assert [r.episode for r in more.records] == [0, 1, 2]
