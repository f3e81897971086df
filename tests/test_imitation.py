"""Self-imitation of a centred DDPG / TD3 agent: the elite is the run's best episodes, the actor's
steps pull it toward their actions (and leave a held actor alone), the elite travels in the
checkpoint, and a search stopped and resumed logs what an uninterrupted one logs."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from run_helpers import episode_log, interrupted_search

from haq.core.errors import ConfigError, RunDirError
from haq.jobs.problems import make_problem
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem
from haq.runs.rundir import RunDir
from haq.search.agents import hold_actor, make_agent
from haq.search.config import IMITATION, AgentConfig, SearchConfig
from haq.search.imitation import ELITE, EliteEpisode, EliteEpisodes, SelfImitation
from haq.search.run import run_search
from haq.search.rungs import RUNG

EPISODES = 40
STOP_AT = 27


def _episode(n: int, reward: float, steps: int = 3, value: float = 0.0) -> EliteEpisode:
    return EliteEpisode(n, reward, np.full((steps, 4), n, dtype=np.float32), np.full((steps, 2), value, dtype=np.float32))


def test_the_elite_keeps_the_best_episodes_and_the_earlier_on_ties() -> None:
    elite = EliteEpisodes(3)
    for n, reward in enumerate([-2.0, -1.0, -3.0, -1.0, -0.5, -4.0]):
        elite.offer(_episode(n, reward))
    assert [(e.episode, e.reward) for e in elite.episodes] == [(4, -0.5), (1, -1.0), (3, -1.0)]
    steps = elite.steps()
    assert steps is not None and steps[0].shape == (9, 4) and steps[1].shape == (9, 2)
    assert EliteEpisodes(3).steps() is None


def test_the_elite_round_trips_through_json() -> None:
    elite = EliteEpisodes(2)
    elite.offer(_episode(0, -1.25, value=0.3))
    elite.offer(_episode(1, -0.75, value=-0.7))
    back = EliteEpisodes.from_state(2, json.loads(json.dumps(elite.to_state())), "run")
    assert [e.episode for e in back.episodes] == [1, 0]
    for a, b in zip(elite.episodes, back.episodes):
        assert a.reward == b.reward and np.array_equal(a.observations, b.observations) and np.array_equal(a.actions, b.actions)
    assert EliteEpisodes.from_state(2, None, "run").episodes == []


@pytest.mark.parametrize(
    "doc",
    [
        {"episode": 0},
        [{"episode": "0", "reward": 1.0, "observations": [[0.0]], "actions": [[0.0]]}],
        [{"episode": 0, "reward": float("nan"), "observations": [[0.0]], "actions": [[0.0]]}],
        [{"episode": 0, "reward": 1.0, "observations": [[0.0], [1.0]], "actions": [[0.0]]}],
        [{"episode": 0, "reward": 1.0, "observations": [[0.0], [1.0, 2.0]], "actions": [[0.0], [0.0]]}],
        [{"episode": 0, "reward": 1.0, "observations": [["x"]], "actions": [[0.0]]}],
    ],
)
def test_a_damaged_elite_is_one_line_naming_the_run(doc: object) -> None:
    with pytest.raises(RunDirError, match=rf"^run/checkpoint: .*'{ELITE}'") as err:
        EliteEpisodes.from_state(3, doc, "run/checkpoint")
    assert "\n" not in str(err.value)


class _Box(gym.Env):  # type: ignore[type-arg]
    """A one-step environment: just enough for a DDPG agent to exist."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, object] | None = None) -> tuple[np.ndarray, dict[str, object]]:
        return np.zeros(4, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, object]]:
        return np.zeros(4, np.float32), 0.0, True, False, {}


def _distance(model: object, elite: EliteEpisodes) -> float:
    steps = elite.steps()
    assert steps is not None
    with torch.no_grad():
        acted = model.actor(torch.as_tensor(steps[0]))  # type: ignore[attr-defined]
    return float(((acted - torch.as_tensor(steps[1])) ** 2).mean())


def _actor_steps(model: object, n: int) -> None:
    """``n`` actor optimizer steps with no gradient of its own: only a hook can move the actor."""
    actor = model.actor  # type: ignore[attr-defined]
    for _ in range(n):
        actor.optimizer.zero_grad(set_to_none=False)
        actor.optimizer.step()


def test_the_actor_steps_toward_the_elite_actions_unless_held() -> None:
    model = make_agent(AgentConfig(algo="ddpg"), _Box(), 1, 10, seed=0)
    elite = EliteEpisodes(2)
    elite.offer(_episode(1, -1.0, steps=5, value=0.6))
    elite.offer(_episode(2, -2.0, steps=5, value=-0.4))
    imitation = SelfImitation(elite, IMITATION)
    start = _distance(model, elite)
    _actor_steps(model, 20)
    assert _distance(model, elite) == start  # not installed: zero gradients move nothing
    imitation.install(model)
    hold_actor(model, True)
    _actor_steps(model, 20)
    assert _distance(model, elite) == start  # held by actor_delay: left alone
    hold_actor(model, False)
    _actor_steps(model, 100)
    assert _distance(model, elite) < 0.5 * start
    imitation.uninstall()
    model.actor.optimizer.state.clear()  # Adam's momentum would carry the last steps on
    moved = _distance(model, elite)
    _actor_steps(model, 5)
    assert _distance(model, elite) == moved


def test_only_a_centred_ddpg_or_td3_agent_imitates_by_default() -> None:
    assert AgentConfig(decision="layer").for_problem(True).imitation == IMITATION
    assert AgentConfig(algo="td3").for_problem(True).imitation == IMITATION
    assert AgentConfig(decision="layer").for_problem(False).imitation == 0.0
    assert AgentConfig(decision="layer", algo="sac").for_problem(True).imitation == 0.0
    assert AgentConfig(decision="layer", imitation=0.0).for_problem(True).imitation == 0.0
    assert AgentConfig().for_problem(True).imitation == 0.0  # the default there is the objective agent: SAC, never centred
    with pytest.raises(ConfigError, match="imitation"):
        AgentConfig(imitation=-1.0)
    with pytest.raises(ConfigError, match="imitation_episodes"):
        AgentConfig(imitation_episodes=0)


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(action_prior="sensitivity", budget=BudgetConfig(ratio=0.6)), cache_dir=cache_dir)


def _search(problem: SearchProblem) -> SearchConfig:
    return SearchConfig(
        env=problem.config,
        agent=AgentConfig(decision="layer", prior_rungs=4, actor_delay=4, imitation_episodes=3),
        episodes=EPISODES,
    )


def test_the_checkpoint_holds_the_best_agent_episodes_and_a_resume_changes_nothing(
    tmp_path: Path, problem: SearchProblem
) -> None:
    straight = run_search(_search(problem), problem, tmp_path / "straight")
    cut = tmp_path / "cut"
    interrupted_search(_search(problem), problem, cut, after=STOP_AT - 1)
    states = sorted((cut / "checkpoint").rglob("state.json"))
    assert len(states) == 1
    elite = EliteEpisodes.from_state(3, json.loads(states[0].read_text())[ELITE], "cut")
    agent = [r for r in RunDir(cut).read_episodes() if RUNG not in r.extra]
    best = sorted(agent, key=lambda r: (-r.reward, r.episode))[:3]
    assert [e.episode for e in elite.episodes] == [r.episode for r in best]
    assert all(len(e.observations) == len(problem.layer_names) for e in elite.episodes)
    run_search(_search(problem), problem, cut, resume=True)
    assert episode_log(cut) == episode_log(straight.run_dir)
