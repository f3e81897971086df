"""A search centred on the sensitivity prior: it first evaluates the prior allocation at a few
budgets (prior rungs), logs them as episodes, centres its agent on the best, and a resume in the
middle of them changes nothing; its agent is paid each layer's cost at the step that spends it,
and every episode's total stays the logged reward."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from run_helpers import episode_log

from envs.vector import MixedPrecisionVecEnv
from haq.core.errors import ConfigError, RunDirError
from haq.jobs.problems import make_problem
from haq.problem.allocation import budget_ladder, choice_problem, sensitivity_rungs
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.solvers import choice_error
from haq.search.config import AgentConfig, SearchConfig
from haq.search.credit import VecCostCredit
from haq.search.run import run_search
from haq.search.rungs import RUNG, centre_rung

RUNGS = 4
EPISODES = 10 * RUNGS  # rungs take at most a tenth of a run


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(action_prior="sensitivity", budget=BudgetConfig(ratio=0.6)), cache_dir=cache_dir)


def _search(problem: SearchProblem, episodes: int, rungs: int = RUNGS) -> SearchConfig:
    return SearchConfig(env=problem.config, agent=AgentConfig(decision="layer", prior_rungs=rungs), episodes=episodes)


def test_rungs_are_the_estimated_front_cheaper_and_less_accurate_down_the_ladder(problem: SearchProblem) -> None:
    bm, sens = problem.budget_model, problem.sensitivity
    assert sens is not None
    ladder = budget_ladder(bm, 6, 0.3)
    rungs = sensitivity_rungs(bm, sens, ladder)
    assert rungs[0] == (ladder[0], problem.prior)  # the first rung is the full-budget prior
    assert len({pairs for _, pairs in rungs}) == len(rungs) >= 2
    cp = choice_problem(bm, sens)
    errors = []
    for target, pairs in rungs:
        assert bm.policy_cost(pairs) <= target * (1 + 1e-9)  # additive table: the rung's own budget holds
        errors.append(choice_error(cp.errors, tuple(p.index(x) for p, x in zip(cp.pairs, pairs))))
    assert errors == sorted(errors)  # a smaller budget never buys a smaller estimated error


@pytest.mark.parametrize("rule", ["best", "cheapest_tied"])
def test_search_logs_the_rungs_first_and_starts_at_its_centre_rung(tmp_path: Path, problem: SearchProblem, rule: str) -> None:
    agent = AgentConfig(decision="layer", prior_rungs=RUNGS, prior_centre=rule)
    cfg = SearchConfig(env=problem.config, agent=agent, episodes=EPISODES)
    result = run_search(cfg, problem, tmp_path / "run")
    rungs = [r for r in result.records if RUNG in r.extra]
    assert [r.episode for r in rungs] == list(range(len(rungs))) and 2 <= len(rungs) <= RUNGS
    fractions = [float(r.extra[RUNG]) for r in rungs]
    assert fractions[0] == 1.0 and fractions == sorted(fractions, reverse=True) and fractions[-1] >= 0.5 - 1e-9
    assert len({tuple(map(tuple, r.policy.values())) for r in rungs}) == len(rungs)
    centre = centre_rung(result.records, cfg.agent, problem.config, "run")
    assert centre is not None
    if rule == "best":
        assert centre == max(rungs, key=lambda r: r.reward)
    first_agent = result.records[len(rungs)]
    assert RUNG not in first_agent.extra
    assert first_agent.policy == centre.policy  # the centred agent's noise-free first action is its centre rung


def test_a_short_run_spends_at_most_a_tenth_of_its_episodes_on_rungs(tmp_path: Path, problem: SearchProblem) -> None:
    assert sum(RUNG in r.extra for r in run_search(_search(problem, 25), problem, tmp_path / "a").records) == 2
    short = run_search(_search(problem, 2), problem, tmp_path / "b")
    assert all(RUNG not in r.extra for r in short.records)
    assert [tuple(short.records[0].policy[n]) for n in problem.layer_names] == list(problem.prior or ())


def test_no_rungs_starts_at_the_full_budget_prior(tmp_path: Path, problem: SearchProblem) -> None:
    result = run_search(_search(problem, 12, rungs=0), problem, tmp_path / "run")
    assert all(RUNG not in r.extra for r in result.records)
    assert [tuple(result.records[0].policy[n]) for n in problem.layer_names] == list(problem.prior or ())


def test_a_resume_among_the_rungs_logs_what_an_uninterrupted_run_logs(tmp_path: Path, problem: SearchProblem) -> None:
    straight = run_search(_search(problem, EPISODES), problem, tmp_path / "straight").run_dir
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    lines = (cut / "episodes.jsonl").read_text().splitlines(keepends=True)
    (cut / "episodes.jsonl").write_text("".join(lines[:2]))  # killed after two rungs: no agent, no checkpoint yet
    shutil.rmtree(cut / "checkpoint")
    (cut / "best_policy.json").unlink()
    run_search(_search(problem, EPISODES), problem, cut, resume=True)
    assert episode_log(cut) == episode_log(straight)


def test_a_resume_over_a_damaged_rung_is_one_line_naming_the_run(tmp_path: Path, problem: SearchProblem) -> None:
    run = run_search(_search(problem, EPISODES), problem, tmp_path / "run").run_dir
    rows = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()[:RUNGS]]
    for row in rows:
        row["extra"][RUNG] = "half"
    (run / "episodes.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))  # killed after its rungs
    shutil.rmtree(run / "checkpoint")
    (run / "best_policy.json").unlink()
    with pytest.raises(RunDirError, match=rf"^{run}: episode \d+'s '{RUNG}' must be a budget fraction in \(0, 1\], got 'half'$"):
        run_search(_search(problem, EPISODES), problem, run, resume=True)


@pytest.mark.parametrize(("field", "value"), [("prior_rungs", -1), ("prior_floor", 0.0), ("prior_floor", 1.5)])
def test_bad_rung_settings_are_one_line_errors(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        AgentConfig(**{field: value})


def test_only_an_agent_centred_on_a_prior_evaluates_rungs() -> None:
    assert AgentConfig(decision="layer").for_problem(True).prior_rungs == AgentConfig().prior_rungs
    assert AgentConfig().for_problem(True).prior_rungs == 0  # the default there is the objective agent, never centred
    assert AgentConfig(decision="layer").for_problem(False).prior_rungs == 0
    assert AgentConfig(start_at_centre=True).for_problem(False).prior_rungs == 0


def test_cost_credit_pays_each_layer_its_cost_and_keeps_every_episode_total(problem: SearchProblem) -> None:
    weight = problem.config.reward.cost_weight
    venv = VecCostCredit(MixedPrecisionVecEnv(problem, 1), weight)
    rng = np.random.default_rng(0)
    venv.reset()
    for _ in range(3):  # episodes follow one another through the vectorized env's own resets
        paid, used = [], 0.0
        while True:
            venv.step_async(rng.uniform(-1, 1, size=(1, 2)).astype(np.float32))
            _, rewards, dones, infos = venv.step_wait()
            paid.append(float(rewards[0]))
            if dones[0]:
                break
            assert paid[-1] == pytest.approx(-weight * (infos[0]["budget_used"] - used), abs=1e-6)
            used = infos[0]["budget_used"]
        assert sum(paid) == pytest.approx(infos[0]["reward"], abs=1e-5)
        assert all(p <= 0 for p in paid[:-1]) and any(p < 0 for p in paid[:-1])


def test_cost_credit_is_on_for_a_centred_agent_only_unless_asked() -> None:
    assert AgentConfig(decision="layer").for_problem(True).cost_credit is True
    assert AgentConfig(decision="layer").for_problem(False).cost_credit is False
    assert AgentConfig(decision="layer", cost_credit=False).for_problem(True).cost_credit is False
    assert AgentConfig(cost_credit=True, decision="layer").for_problem(False).cost_credit is True


def test_a_held_actor_stays_while_its_critic_learns(problem: SearchProblem) -> None:
    import torch

    from haq.search.agents import hold_actor, make_agent

    cfg = AgentConfig(decision="layer", hidden=(16,), gradient_steps=4, batch_size=8).for_problem(True)
    env = MixedPrecisionVecEnv(problem, 1)
    model = make_agent(cfg, env, env.num_layers, 10, 0)

    def weights(module: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    model.learn(total_timesteps=env.num_layers)  # one episode, so the replay buffer has a minibatch
    actor, critic = weights(model.actor), weights(model.critic)
    hold_actor(model, True)
    model.train(gradient_steps=4, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(actor, weights(model.actor)))
    assert not all(torch.equal(a, b) for a, b in zip(critic, weights(model.critic)))
    hold_actor(model, False)
    model.train(gradient_steps=4, batch_size=8)
    assert not all(torch.equal(a, b) for a, b in zip(actor, weights(model.actor)))


def test_actor_delay_resolves_for_the_problem() -> None:
    from haq.search.config import CENTRED_ACTOR_DELAY

    assert AgentConfig(decision="layer").for_problem(True).actor_delay == CENTRED_ACTOR_DELAY
    assert AgentConfig(decision="layer").for_problem(False).actor_delay == 0
    assert AgentConfig(decision="layer", actor_delay=3).for_problem(True).actor_delay == 3
    with pytest.raises(ConfigError, match="actor_delay"):
        AgentConfig(actor_delay=-1)


def test_actor_every_resolves_and_sets_the_policy_delay(problem: SearchProblem) -> None:
    from stable_baselines3 import SAC

    from haq.search.agents import make_agent, set_actor_every
    from haq.search.config import CENTRED_ACTOR_EVERY

    assert AgentConfig(decision="layer").for_problem(True).actor_every == CENTRED_ACTOR_EVERY
    assert AgentConfig(decision="layer").for_problem(False).actor_every is None
    with pytest.raises(ConfigError, match="actor_every"):
        AgentConfig(actor_every=0)
    env = MixedPrecisionVecEnv(problem, 1)
    ddpg = make_agent(AgentConfig(algo="ddpg", hidden=(8,)), env, env.num_layers, 4, 0)
    set_actor_every(ddpg, 4)
    assert ddpg.policy_delay == 4
    set_actor_every(ddpg, None)
    assert ddpg.policy_delay == 4  # None keeps what is set
    sac = make_agent(AgentConfig(algo="sac", hidden=(8,)), env, env.num_layers, 4, 0)
    set_actor_every(sac, 4)
    assert isinstance(sac, SAC) and not hasattr(sac, "policy_delay")


def test_each_episode_that_repeats_an_evaluated_policy_reheats_the_noise(tmp_path: Path, problem: SearchProblem) -> None:
    reheating = AgentConfig(decision="layer", prior_rungs=RUNGS, centred_noise_reheat=2.0)
    cfg = SearchConfig(env=problem.config, agent=reheating, episodes=EPISODES)
    run = tmp_path / "run"
    records = run_search(cfg, problem, run).records
    agent = cfg.agent.for_problem(True)
    assert agent.noise_reheat is not None
    seen: set[str] = set()
    scale = agent.noise_decay  # stable-baselines3's reset as learn() starts
    repeats = 0
    for r in records:
        key = json.dumps(r.policy, sort_keys=True)
        if RUNG not in r.extra:
            repeat = key in seen
            repeats += repeat
            scale = min(1.0, scale * agent.noise_reheat) if repeat else scale * agent.noise_decay
        seen.add(key)
    assert 0 < repeats < len(records) - RUNGS  # both kinds of episode happened, so the replay tests both
    last = sorted((run / "checkpoint").iterdir())[-1]
    noise = json.loads((last / "agent_state.json").read_text())["rng"]["noise"]
    assert noise["scale"] == pytest.approx(scale, rel=1e-9)
