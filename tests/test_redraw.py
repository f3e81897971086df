"""An objective agent's repeating proposals drawn again (``AgentConfig.redraws``): a repeat of the
run's policies or of its batch's is replaced while tries last, the replay buffer learns the action
stepped, each redraw is annotated, and a killed run resumes to the log of one never killed."""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path

import numpy as np
import pytest
from run_helpers import episode_log, interrupted_search, with_empty_cache

from haq.core.errors import ConfigError, InternalError
from haq.core.types import BitPair
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.search.config import AgentConfig, SearchConfig
from haq.search.redraw import Redraws
from haq.search.run import run_search
from haq.search.whole_policy import DECODED, REDRAWN

CHEAP = EvalConfig(kind="cheap", val_samples=120)
TRIES = 4
OBJECTIVE = AgentConfig(decision="objective", warmup_episodes=2, hidden=(16,), ent_coef_init=0.01, redraws=TRIES)
EPISODES = 16


class Rounding:
    """A decoder whose policy is each action rounded to one of three widths: many actions, few policies."""

    def policy(self, action: np.ndarray) -> tuple[BitPair, ...]:
        return tuple((int(round(float(a))) + 4, 8) for a in action)


def _draws(*actions: list[float]) -> tuple[Redraws, list[np.ndarray]]:
    queue = [np.asarray(a, dtype=np.float32) for a in actions]
    redraws = Redraws({(("a", 4, 8), ("b", 4, 8))}, ("b", "a"), TRIES)
    redraws.draw = lambda: queue.pop(0)
    return redraws, queue


def test_a_repeat_of_the_run_or_of_the_batch_is_drawn_again_while_tries_last() -> None:
    redraws, queue = _draws([1.0, 0.0], [0.9, 0.1], [-1.0, -1.0])
    actions, policies, counts = redraws.fresh(np.array([[0.0, 0.1], [1.0, 0.0]], dtype=np.float32), Rounding())
    # the first repeats the run's policy (4, 4 by name), drawn again once; the second then repeats the
    # first's new policy in the same batch and is drawn twice before it is new
    assert policies == [((5, 8), (4, 8)), ((3, 8), (3, 8))] and counts == [1, 2] and not queue
    assert actions[0].tolist() == [1.0, 0.0] and actions[1].tolist() == [-1.0, -1.0]
    assert redraws.redrawn == 2


def test_the_last_draw_is_kept_when_every_try_repeats() -> None:
    redraws, queue = _draws(*([[0.1, -0.1]] * TRIES))
    _, policies, counts = redraws.fresh(np.zeros((1, 2), dtype=np.float32), Rounding())
    assert policies == [((4, 8), (4, 8))] and counts == [TRIES] and not queue


def test_redraws_needs_an_agent_and_a_count() -> None:
    with pytest.raises(InternalError, match="draw must be set"):
        Redraws(set(), ("a",), 1).fresh(np.zeros((1, 1), dtype=np.float32), Rounding())
    with pytest.raises(ConfigError, match=r"^redraws must be an integer >= 0, got -1"):
        AgentConfig(redraws=-1)


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(evaluation=CHEAP, action_prior="uniform"), cache_dir=cache_dir)


def _config(problem: SearchProblem, agent: AgentConfig = OBJECTIVE) -> SearchConfig:
    return SearchConfig(env=problem.config, agent=agent, episodes=EPISODES, seed=5)


def _keys(log: list[dict[str, object]]) -> list[str]:
    return [repr(sorted(e["policy"].items())) for e in log]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def runs(problem: SearchProblem, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The objective agent with and without redraws, one episode at a time and two (in-process)."""
    out = tmp_path_factory.mktemp("redraw")
    paths = {}
    for name, agent, workers in (
        ("redraws", OBJECTIVE, 1),
        ("repeats", dataclasses.replace(OBJECTIVE, redraws=0), 1),
        ("batch", OBJECTIVE, 2),
    ):
        run_search(_config(problem, agent), dataclasses.replace(with_empty_cache(problem), workers=workers), out / name)
        paths[name] = out / name
    return paths


@pytest.mark.parametrize("name", ["redraws", "batch"])
def test_no_policy_repeats_unless_every_try_did(runs: dict[str, Path], name: str) -> None:
    log = episode_log(runs[name])
    keys = _keys(log)
    repeats = [e for i, e in enumerate(log) if keys[i] in keys[:i]]
    assert all(e["extra"].get(REDRAWN) == TRIES for e in repeats)  # type: ignore[attr-defined]
    assert any(REDRAWN in e["extra"] for e in log)  # type: ignore[operator]
    assert len(set(keys)) > len(set(_keys(episode_log(runs["repeats"]))))


def test_without_redraws_the_agent_repeats_itself(runs: dict[str, Path]) -> None:
    """What the redraws are for: the same agent on the same seed proposes repeats, annotated nowhere."""
    log = episode_log(runs["repeats"])
    assert len(set(_keys(log))) < len(log)
    assert not any(REDRAWN in e["extra"] for e in log)  # type: ignore[operator]


def test_the_replay_buffer_holds_the_actions_stepped(runs: dict[str, Path]) -> None:
    log = episode_log(runs["redraws"])
    buffer = np.load(sorted(glob.glob(str(runs["redraws"] / "checkpoint" / "*" / "buffer.npz")))[-1])
    stepped = np.asarray([e["extra"][DECODED] for e in log], dtype=np.float32)  # type: ignore[index]
    np.testing.assert_allclose(buffer["actions"][:, 0, :], stepped, atol=1e-6)


@pytest.mark.parametrize(("name", "after"), [("redraws", 6), ("batch", 7)])
def test_a_run_with_redraws_killed_resumes_to_the_log_of_one_never_killed(
    problem: SearchProblem, runs: dict[str, Path], tmp_path: Path, name: str, after: int
) -> None:
    workers = 2 if name == "batch" else 1
    cfg = _config(problem)
    interrupted_search(cfg, dataclasses.replace(with_empty_cache(problem), workers=workers), tmp_path / "killed", after=after)
    run_search(cfg, dataclasses.replace(with_empty_cache(problem), workers=workers), tmp_path / "killed", resume=True)
    assert episode_log(tmp_path / "killed") == episode_log(runs[name])


def test_a_transfer_of_an_agent_that_redraws_acts_deterministically_then_redraws(
    runs: dict[str, Path], tmp_path: Path, cache_dir: Path
) -> None:
    """Its zero-shot episode is the actor's own deterministic action, never drawn again; its
    fine-tuning is a search and draws its repeats again."""
    from haq.transfer import TransferConfig, run_transfer, transfer_env
    from haq.transfer.run import ZERO_SHOT
    from haq.transfer.source import load_source

    cfg = TransferConfig(source=str(runs["redraws"]), table="bismo-edge", episodes=10)
    result = run_transfer(cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir), tmp_path / "t")
    zero, rest = result.records[0], result.records[1:]
    assert zero.extra["phase"] == ZERO_SHOT and REDRAWN not in zero.extra
    keys = [tuple(sorted(r.policy.items())) for r in result.records]
    assert all(r.extra.get(REDRAWN) == TRIES for i, r in enumerate(rest, 1) if keys[i] in keys[:i])
    assert len(rest) == 10 and load_source(runs["redraws"]).config.agent.redraws == TRIES
