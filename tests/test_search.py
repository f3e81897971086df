"""The search run and its parts: configs, reward, noise, baseline, run directory, agents, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from envs.mixed_precision import OBS_FEATURES, MixedPrecisionEnv
from haq.cli import main
from haq.core import config as serial
from haq.core.errors import ConfigError
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.jobs.problems import make_problem
from haq.problem.budget import Budget
from haq.problem.config import EnvConfig, RewardConfig
from haq.problem.problem import SearchProblem
from haq.problem.reward import compute_reward, sampling_std
from haq.quant import QuantPolicy
from haq.runs.rundir import RunDir
from haq.search.agents import load_agent
from haq.search.baseline import RewardBaseline
from haq.search.config import AgentConfig, SearchConfig
from haq.search.noise import DecayingTruncatedNormalNoise
from haq.search.run import run_search
from haq.workload import Workload


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def test_config_round_trips_through_json() -> None:
    cfg = SearchConfig(agent=AgentConfig(algo="td3", hidden=(32, 16)), episodes=7, seed=3)
    again = serial.from_dict(SearchConfig, json.loads(json.dumps(serial.to_dict(cfg))))
    assert again == cfg


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AgentConfig(algo="a2c"), "ddpg, td3, sac, ppo"),
        (lambda: AgentConfig(hidden=()), "hidden"),
        (lambda: AgentConfig(noise_decay=1.5), "noise_decay"),
        (lambda: SearchConfig(episodes=0), "episodes"),
        (lambda: RewardConfig(acc_weight=float("inf")), "finite"),
        (lambda: serial.from_dict(SearchConfig, {"env": {"bogus": 1}}), "unknown field"),
    ],
)
def test_bad_search_config(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        make()


def test_reward_formula() -> None:
    budget = Budget("latency", target=2.0, reference=4.0, cheapest=1.0, dearest=4.0)
    ref = ReferenceMetrics(clean_acc=0.90, robust_acc=0.50)
    m = PolicyMetrics(clean_acc=0.88, robust_acc=0.55, latency_ms=1.0, energy_mj=None, size_bits=100)
    cfg = RewardConfig(acc_weight=0.1, robust_weight=0.05, cost_weight=0.2)
    assert compute_reward(m, ref, budget, cfg) == pytest.approx(0.1 * -2.0 + 0.05 * 5.0 - 0.2 * 0.5)
    no_attacks = PolicyMetrics(0.88, None, 1.0, None, 100)
    assert compute_reward(no_attacks, ref, budget, cfg) == pytest.approx(-0.2 - 0.1)


@pytest.mark.parametrize(
    ("clean", "robust", "n_clean", "n_robust"), [(0.98, None, 300, 100), (0.7, 0.4, 150, 50), (0.5, 0.0, 30, 10)]
)
def test_sampling_std_is_the_spread_of_rewards_over_resampled_images(
    clean: float, robust: float | None, n_clean: int, n_robust: int
) -> None:
    cfg = RewardConfig(acc_weight=0.1, robust_weight=0.05, cost_weight=0.2)
    budget = Budget(metric="latency", target=2.0, reference=4.0, cheapest=1.0, dearest=4.0)
    ref = ReferenceMetrics(clean_acc=0.99, robust_acc=0.5 if robust is not None else None)
    rng = np.random.default_rng(0)
    draws = [
        compute_reward(
            PolicyMetrics(
                rng.binomial(n_clean, clean) / n_clean,
                None if robust is None else rng.binomial(n_robust, robust) / n_robust,
                1.0,
                None,
                100,
            ),
            ref,
            budget,
            cfg,
        )
        for _ in range(20000)
    ]
    std = sampling_std(PolicyMetrics(clean, robust, 1.0, None, 100), cfg, n_clean, n_robust)
    assert std == pytest.approx(float(np.std(draws)), rel=0.03)
    # four times the images halve it; a certain outcome has none
    assert sampling_std(PolicyMetrics(clean, robust, 1.0, None, 100), cfg, 4 * n_clean, 4 * n_robust) == pytest.approx(std / 2)
    assert sampling_std(PolicyMetrics(1.0, None if robust is None else 0.0, 1.0, None, 100), cfg, n_clean, n_robust) == 0.0
    with pytest.raises(ValueError, match="image counts"):
        sampling_std(PolicyMetrics(clean, robust, 1.0, None, 100), cfg, 0, n_robust)


def test_noise_is_truncated_and_decays_after_warmup() -> None:
    noise = DecayingTruncatedNormalNoise(2, sigma=0.5, decay=0.5, warmup_episodes=2, truncate=2.0, seed=0)
    draws = np.array([noise() for _ in range(500)])
    assert np.abs(draws).max() <= 1.0 + 1e-6 and draws.std() > 0.3
    for _ in range(4):
        noise.reset()
    assert noise.current_sigma == pytest.approx(0.5 * 0.25)
    assert np.abs(np.array([noise() for _ in range(200)])).max() <= 0.25 + 1e-6


def test_reward_baseline_centres_final_rewards(problem: SearchProblem) -> None:
    env = RewardBaseline(MixedPrecisionEnv(problem=problem), momentum=0.5)
    raw, centred = [], []
    for action in (-1.0, 1.0, 0.0):
        env.reset(seed=0)
        for _ in range(len(problem.layer_names)):
            _, r, done, _, info = env.step(np.full(2, action, np.float32))
        raw.append(info["reward"])
        centred.append(float(r))
    assert centred[0] == 0.0
    assert centred[1] == pytest.approx(raw[1] - raw[0])
    assert centred[2] == pytest.approx(raw[2] - (0.5 * raw[0] + 0.5 * raw[1]))


@pytest.mark.parametrize("algo", ["ddpg", "td3", "sac", "ppo"])
def test_each_agent_runs_and_writes_the_run_dir(tmp_path: Path, problem: SearchProblem, algo: str) -> None:
    cfg = SearchConfig(agent=AgentConfig(algo=algo, warmup_episodes=1, hidden=(16,)), episodes=3, seed=1)
    seen = []
    result = run_search(cfg, problem, tmp_path / algo, progress=seen.append)
    rd = RunDir(result.run_dir)
    records = rd.read_episodes()
    assert [r.episode for r in records] == [0, 1, 2] == [p.episode for p in seen]
    assert rd.read_config()["config"] == serial.to_dict(cfg)
    best = QuantPolicy.load(rd.best_path)
    assert best.meta["reward"] == max(r.reward for r in records) == result.best.reward
    assert {n: (b.w_bits, b.a_bits) for n, b in best.layers.items()} == dict(result.best.policy)
    assert seen[-1].best_reward == result.best.reward


def test_saved_agent_carries_what_transfer_needs(tmp_path: Path, problem: SearchProblem) -> None:
    cfg = SearchConfig(agent=AgentConfig(decision="layer", warmup_episodes=1, hidden=(16,)), episodes=2)
    run_search(cfg, problem, tmp_path / "run")
    ckpt = next((tmp_path / "run" / "checkpoint").glob("ep-*"))
    env = MixedPrecisionEnv(problem=problem)
    model, meta = load_agent(ckpt, env)
    assert meta["source_table"] == problem.table.name and meta["observation"]["features"] == list(OBS_FEATURES)
    assert (meta["min_bits"], meta["max_bits"]) == (2, 8) and meta["reward"] == serial.to_dict(cfg)["env"]["reward"]
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--agent", "a2c"], "choose one of auto, ddpg, td3, sac, ppo"),
        (["--device", "nope"], "shipped cost table"),
        (["--model", "nope"], "choose one of"),
        (["--budget", "0.01"], "achievable range"),
        (["--evaluator", "fast"], "choose one of cheap, screen, full"),
        (["--hardware-feedback"], "prices another device"),
        (["--action-prior", "ilp"], "action_prior"),
        (["--observation", "v9"], "observation"),
        (["--projection", "greedy"], "choose one of stepwise, shift, ceiling"),
    ],
)
def test_cli_bad_input_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    digits_workload: Workload,
    argv: list[str],
    message: str,
) -> None:
    """With the model already in the session's cache (``digits_workload``) nothing else is logged,
    so the error is the only line on stderr, whatever ran before and however cold the user's cache."""
    assert main(["search", "--evaluator", "cheap", "--episodes", "1", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("haq: error:") and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_cli_shift_projection_is_recorded_and_its_episodes_fit(
    tmp_path: Path, cache_dir: Path, digits_workload: Workload
) -> None:
    out = tmp_path / "r"
    argv = ["search", "--evaluator", "cheap", "--episodes", "2", "--agent", "sac", "--warmup", "1"]
    assert main([*argv, "--action-prior", "uniform", "--projection", "shift", "--out", str(out)]) == 0
    rd = RunDir(out)
    env = serial.from_dict(SearchConfig, rd.read_config()["config"]).env
    assert env.projection == "shift"
    problem = make_problem(env, cache_dir=cache_dir)
    budget = problem.budget_model
    records = rd.read_episodes()
    assert len(records) == 2
    assert all(budget.fits(budget.policy_cost([r.policy[n] for n in problem.layer_names])) for r in records)
