"""Tracking: per-episode TensorBoard scalars from every proposer, the agent's losses through
stable-baselines3's own logger, and MLflow params / metrics / artifacts (a file: store)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from haq.evaluation.metrics import PolicyMetrics
from haq.jobs import parse_job
from haq.jobs.execute import run_job
from haq.jobs.problems import make_problem
from haq.problem.budget import Budget
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.runs import tracking
from haq.runs.progress import Progress
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search

needs_tensorboard = pytest.mark.skipif(not tracking.tensorboard_available(), reason="needs the tensorboard package")


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _progress(episode: int, reward: float, latency: float) -> Progress:
    metrics = PolicyMetrics(clean_acc=0.9, robust_acc=0.5, latency_ms=latency, energy_mj=None, size_bits=1000)
    return Progress(episode, 3, reward, max(reward, 0.0), 0, metrics, False)


@needs_tensorboard
def test_episode_tracker_writes_the_episode_scalars(tmp_path: Path) -> None:
    budget = Budget(metric="latency", target=2.0, reference=4.0, cheapest=1.0, dearest=4.0)
    seen: list[int] = []
    with tracking.EpisodeTracker(tmp_path, budget) as tracker:
        forward = tracker.wrap(lambda p: seen.append(p.episode))
        for i, (reward, latency) in enumerate([(-1.0, 1.0), (0.5, 3.0), (0.2, 2.0)]):
            forward(_progress(i, reward, latency))
    assert seen == [0, 1, 2]
    scalars = _scalars(tmp_path / tracking.TENSORBOARD_DIR / "episodes")
    assert {f"episode/{k}" for k in ("reward", "clean_acc", "robust_acc", "cost", "budget_used", "best_reward")} <= set(scalars)
    assert scalars["episode/budget_used"] == [(0, 0.5), (1, 1.5), (2, 1.0)]
    assert [s for s, _ in scalars["episode/reward"]] == [0, 1, 2]


def test_without_tensorboard_one_line_and_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    lines: list[str] = []
    budget = Budget(metric="latency", target=2.0, reference=4.0, cheapest=1.0, dearest=4.0)
    with tracking.EpisodeTracker(tmp_path, budget, lines.append) as tracker:
        tracker.wrap(None)(_progress(0, 0.0, 1.0))
    assert len(lines) == 1 and "tensorboard" in lines[0]
    assert not (tmp_path / tracking.TENSORBOARD_DIR).exists()
    assert tracking.agent_logger(tmp_path).output_formats == []


@needs_tensorboard
def test_search_writes_episode_scalars_and_the_agents_losses(tmp_path: Path, problem: SearchProblem) -> None:
    cfg = SearchConfig(env=EnvConfig(), agent=AgentConfig(warmup_episodes=1, gradient_steps=4), episodes=5, seed=0)
    run_search(cfg, problem, tmp_path / "run")
    episodes = _scalars(tmp_path / "run" / tracking.TENSORBOARD_DIR / "episodes")
    assert [s for s, _ in episodes["episode/reward"]] == list(range(5))
    agent = _scalars(tmp_path / "run" / tracking.TENSORBOARD_DIR / "agent")
    assert any(tag.startswith("train/") and "loss" in tag for tag in agent), sorted(agent)


def test_mlflow_gets_params_metrics_and_artifacts(
    tmp_path: Path, problem: SearchProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow", reason="needs mlflow (or mlflow-skinny)")
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # newer MLflow keeps file: stores behind this switch
    uri = f"file:{tmp_path / 'mlruns'}"
    job = parse_job(
        {"version": 1, "kind": "baseline", "baseline": {"method": "uniform", "evaluations": 3}, "tracking": {"mlflow": uri}}
    )
    out = tmp_path / "run"
    outcome = run_job(job, out, resume=False)
    assert outcome.result is not None
    done = outcome.result.episodes_done
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(json.loads((out / tracking.MLFLOW_RUN_FILE).read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["baseline.method"] == "uniform" and run.data.params["kind"] == "baseline"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "reward")] == list(range(done))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best_policy.json", "config.json"} <= artifacts
    assert (out / "job.toml").is_file()
    again = run_job(job, out, resume=True)
    assert again.result is not None and again.result.resumed_from == done
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id], "a resumed run logs into the same MLflow run"
