"""The agent that sets the sensitivity ILP's objective (``AgentConfig.decision = "objective"``):
its decoder is the ILP under re-weighed errors, every policy it decodes fits the budget and goes
through the environment unchanged, its runs resume like any search, and its settings are
validated in one line; it transfers to the same model on another device."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from run_helpers import episode_log, interrupted, interrupted_search, with_empty_cache

from envs.vector import MixedPrecisionVecEnv
from haq.baselines.candidates import ilp_candidates
from haq.core.errors import ConfigError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.allocation import choice_problem
from haq.problem.budget import map_action
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.sensitivity import SensitivityConfig, estimate_sensitivity
from haq.problem.solvers import choice_cost
from haq.search.config import AgentConfig, SearchConfig
from haq.search.objective import ObjectiveDecoder
from haq.search.run import AgentEnv, run_search
from haq.search.whole_policy import DECODED, VecWholePolicy
from haq.transfer import TransferConfig, run_transfer, transfer_env
from haq.transfer.agent import load_on
from haq.transfer.run import REUSED, ZERO_SHOT
from haq.transfer.source import load_source

CHEAP = EvalConfig(kind="cheap", val_samples=120)
OBJECTIVE = AgentConfig(algo="sac", decision="objective", warmup_episodes=2, hidden=(16,))


@pytest.fixture(scope="module", params=["stepwise", "ceiling"])
def problem(request: pytest.FixtureRequest, cache_dir: Path) -> SearchProblem:
    base = make_problem(EnvConfig(evaluation=CHEAP, projection=request.param), cache_dir=cache_dir)
    w = base.workload
    return dataclasses.replace(base, sensitivity=estimate_sensitivity(w.model, w.layers, w.data, w.device, SensitivityConfig()))


def _actions(decoder: ObjectiveDecoder, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, decoder.action_space.shape[0])).astype(np.float32)


def test_unit_weights_at_the_whole_budget_decode_to_the_ilp_baselines_first_candidate(problem: SearchProblem) -> None:
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    assert problem.sensitivity is not None
    free = sum(len(c.pairs) > 1 for c in problem.budget_model.layers)
    assert decoder.action_space.shape == (free + 1,)
    unit = np.zeros(free + 1, np.float32)
    unit[-1] = 1.0
    [first] = ilp_candidates(problem.budget_model, problem.sensitivity, 1, 0.5)
    assert decoder.policy(unit) == first.pairs


def test_every_decoded_policy_fits_the_budget_it_was_solved_for(problem: SearchProblem) -> None:
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    model = problem.budget_model
    costs = choice_problem(model, problem.sensitivity).costs  # type: ignore[arg-type]
    for action in _actions(decoder, 30, 0):
        pairs = decoder.policy(action)
        assert model.fits(model.policy_cost(pairs))
        target = model.budget.target * (decoder.floor + (1.0 - decoder.floor) * (float(action[-1]) + 1.0) / 2.0)
        choice = tuple(c.pairs.index(p) for c, p in zip(model.layers, pairs))
        if target >= model.budget.cheapest:
            assert choice_cost(costs, choice) <= target * (1 + 1e-9)


def test_weighing_a_layers_error_up_never_raises_its_estimated_error(problem: SearchProblem) -> None:
    """An exact optimum's error on layer i cannot rise when i's weight rises (exchange argument:
    (w'_i − w_i)(e_i(y) − e_i(x)) ≤ 0), so the decoder's weights mean what they say."""
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    cp = decoder.problem
    for action in _actions(decoder, 8, 1):
        for j, layer in enumerate(decoder.free):
            low, high = action.copy(), action.copy()
            low[j], high[j] = -1.0, 1.0
            err = [float(cp.errors[layer][cp.pairs[layer].index(decoder.policy(a)[layer])]) for a in (low, high)]
            assert err[1] <= err[0] + 1e-12


def test_the_layer_actions_map_back_to_the_decoded_policy(problem: SearchProblem) -> None:
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    for action in _actions(decoder, 10, 2):
        rows = decoder.layer_actions(action)
        mapped = tuple(map_action(r, c.pairs, k) for r, c, k in zip(rows, problem.budget_model.layers, decoder.centres))
        assert mapped == decoder.policy(action)


def test_the_environment_evaluates_the_decoded_policy_unchanged(problem: SearchProblem) -> None:
    venv = MixedPrecisionVecEnv(problem, 1)
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    whole = VecWholePolicy(venv, venv.num_layers, decoder)
    assert whole.action_space.shape == decoder.action_space.shape and whole.observation_space.shape == (1,)
    names = problem.layer_names
    for action in _actions(decoder, 4, 3):
        whole.reset()
        _, rewards, dones, infos = whole.step(action[None, :])
        assert dones.tolist() == [True]
        assert infos[0]["policy"] == {n: list(p) for n, p in zip(names, decoder.policy(action))}
        assert int(infos[0]["lowered"]) == 0 and rewards[0] == pytest.approx(infos[0]["reward"])


def test_an_objective_search_resumes_to_the_log_of_an_uninterrupted_one(problem: SearchProblem, tmp_path: Path) -> None:
    cfg = SearchConfig(env=problem.config, agent=OBJECTIVE, episodes=6, seed=2)
    whole = run_search(cfg, with_empty_cache(problem), tmp_path / "whole")
    assert [r.episode for r in whole.records] == list(range(6))
    model = problem.budget_model
    assert all(model.fits(model.policy_cost([r.policy[n] for n in problem.layer_names])) for r in whole.records)
    decoder = ObjectiveDecoder.build(problem, OBJECTIVE.objective_span, OBJECTIVE.prior_floor)
    for r in whole.records:  # each record names the objective its policy was decoded from
        assert tuple(r.policy[n] for n in problem.layer_names) == decoder.policy(np.asarray(r.extra[DECODED]))
    interrupted_search(cfg, problem, tmp_path / "killed", after=3)
    run_search(cfg, problem, tmp_path / "killed", resume=True)
    assert episode_log(tmp_path / "killed") == episode_log(tmp_path / "whole")


def test_an_objective_agent_is_uncentred_sac_and_refuses_what_cannot_follow() -> None:
    resolved = AgentConfig(decision="objective").for_problem(True)
    assert (resolved.algo, resolved.start_at_centre, resolved.prior_rungs) == ("sac", False, 0)
    assert resolved.warmup_episodes == AgentConfig().warmup_episodes
    with pytest.raises(ConfigError, match=r"^decision 'objective' needs agent sac, ppo or auto, not ddpg: "):
        AgentConfig(decision="objective", algo="ddpg")
    with pytest.raises(ConfigError, match=r"^decision 'objective' cannot start at the centre: .*start_at_centre unset or false$"):
        AgentConfig(decision="objective", start_at_centre=True)
    with pytest.raises(ConfigError, match=r"^objective_span must be"):
        AgentConfig(decision="objective", objective_span=0.0)


@pytest.fixture(scope="module")
def objective_source(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A short objective search of the digits CNN on Bit Fusion: the agent the transfer tests reuse."""
    out = tmp_path_factory.mktemp("objective-source") / "run"
    cfg = SearchConfig(env=EnvConfig(evaluation=CHEAP), agent=OBJECTIVE, episodes=4, seed=0)
    run_search(cfg, make_problem(cfg.env, cache_dir=cache_dir), out)
    return out


def _target(source: Path, cache_dir: Path, episodes: int, **changes: object) -> tuple[TransferConfig, SearchProblem]:
    cfg = TransferConfig(source=str(source), table="bismo-edge", episodes=episodes, **changes)  # type: ignore[arg-type]
    return cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir)


def test_a_transferred_objective_agent_decodes_its_action_with_the_new_devices_costs(
    objective_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """The zero-shot policy is the source actor's deterministic action, decoded by the target's
    ILP: within the new device's budget, learning from no source evaluation (they were priced
    for other bits)."""
    cfg, target = _target(objective_source, cache_dir, episodes=2)
    result = run_transfer(cfg, target, tmp_path / "t")
    assert [r.episode for r in result.records] == [0, 1, 2]
    zero = result.records[0]
    assert zero.extra["phase"] == ZERO_SHOT and zero.extra[REUSED] == 0 and zero.extra["source_table"] == "bitfusion"
    agent = dataclasses.replace(OBJECTIVE, warmup_episodes=0).for_problem(target.prior is not None)
    actor = load_on(load_source(objective_source).checkpoint, AgentEnv.build(target, agent, 1).agent_env)
    action, _ = actor.predict(np.ones((1, 1), np.float32), deterministic=True)
    assert zero.extra[DECODED] == pytest.approx(action[0].tolist())  # the episode logs what the actor asked for
    span, floor = OBJECTIVE.objective_span, OBJECTIVE.prior_floor
    decoded = ObjectiveDecoder.build(target, span, floor).policy(action[0])
    assert tuple(zero.policy[n] for n in target.layer_names) == decoded
    home = make_problem(load_source(objective_source).config.env, cache_dir=cache_dir)
    assert ObjectiveDecoder.build(home, span, floor).policy(action[0]) != decoded  # the same objective, other bits at home
    model = target.budget_model
    assert all(model.fits(model.policy_cost([r.policy[n] for n in target.layer_names])) for r in result.records)


def test_a_killed_objective_transfer_resumes_to_the_log_of_an_uninterrupted_one(
    objective_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    cfg, target = _target(objective_source, cache_dir, episodes=4)
    run_transfer(cfg, with_empty_cache(target), tmp_path / "whole")
    interrupted(lambda stop: run_transfer(cfg, with_empty_cache(target), tmp_path / "killed", progress=stop), after=2)
    resumed = run_transfer(cfg, with_empty_cache(target), tmp_path / "killed", resume=True)
    assert resumed.resumed_from == 3
    assert episode_log(tmp_path / "killed") == episode_log(tmp_path / "whole")


def test_an_objective_agent_is_refused_on_another_model_in_one_line(
    objective_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    cfg, target = _target(objective_source, cache_dir, episodes=1, model="digits_mlp")
    refused = (
        r"^the source agent sets the ILP's objective \(agent.decision = 'objective'\), .* of digits_cnn; .* not to digits_mlp$"
    )
    with pytest.raises(ConfigError, match=refused):
        run_transfer(cfg, target, tmp_path / "t")
    assert not (tmp_path / "t").exists()
