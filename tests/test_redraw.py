"""An objective agent's repeating proposals replaced (``AgentConfig.redraws``): a repeat of the
run's policies or of its batch's is drawn again, or replaced by its objective's next-best
allocation (``redraw_from = "objective"``), while tries last; the replay buffer learns the action
stepped, each replacement is annotated, and a killed run resumes to the log of one never killed."""

from __future__ import annotations

import dataclasses
import glob
import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from run_helpers import episode_log, interrupted_search, with_empty_cache

from haq.cli import build_parser, main
from haq.commands.search import search_config
from haq.core.config import from_dict, to_dict
from haq.core.errors import ConfigError, InternalError
from haq.core.types import BitPair
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import pairs_key
from haq.jobs.flags import resolve_job
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.runs.final_pick import ASKED
from haq.search.config import AgentConfig, SearchConfig
from haq.search.objective import ObjectiveDecoder
from haq.search.redraw import Redraws
from haq.search.run import run_search
from haq.search.whole_policy import DECODED, REDRAWN

CHEAP = EvalConfig(kind="cheap", val_samples=120)
TRIES = 4
OBJECTIVE = AgentConfig(decision="objective", warmup_episodes=2, hidden=(16,), ent_coef_init=0.01, redraws=TRIES)
NEXT = dataclasses.replace(OBJECTIVE, redraw_from="objective")
EPISODES = 16


class Rounding:
    """A decoder whose policy is each action rounded to one of three widths: many actions, few policies."""

    def policy(self, action: np.ndarray) -> tuple[BitPair, ...]:
        return tuple((int(round(float(a))) + 4, 8) for a in action)


class Nearest(Rounding):
    """:class:`Rounding` whose alternative is the nearest policy (in total bits) not taken."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def alternative(
        self, action: np.ndarray, taken: Sequence[tuple[BitPair, ...]]
    ) -> tuple[tuple[BitPair, ...], tuple[BitPair, ...]] | None:
        self.asked.append(len(taken))
        first = self.policy(action)
        options = itertools.product([(w, 8) for w in (3, 4, 5)], repeat=len(first))
        ranked = sorted(options, key=lambda p: (sum(abs(x[0] - y[0]) for x, y in zip(p, first)), p))
        return next(((p, p) for p in ranked if p not in taken), None)


def _draws(*actions: list[float]) -> tuple[Redraws, list[np.ndarray]]:
    queue = [np.asarray(a, dtype=np.float32) for a in actions]
    redraws = Redraws({(("a", 4, 8), ("b", 4, 8))}, ("b", "a"), TRIES)
    redraws.draw = lambda: queue.pop(0)
    return redraws, queue


def test_a_repeat_of_the_run_or_of_the_batch_is_drawn_again_while_tries_last() -> None:
    redraws, queue = _draws([1.0, 0.0], [0.9, 0.1], [-1.0, -1.0])
    actions, policies, counts, _ = redraws.fresh(np.array([[0.0, 0.1], [1.0, 0.0]], dtype=np.float32), Rounding())
    # the first repeats the run's policy (4, 4 by name), drawn again once; the second then repeats the
    # first's new policy in the same batch and is drawn twice before it is new
    assert policies == [((5, 8), (4, 8)), ((3, 8), (3, 8))] and counts == [1, 2] and not queue
    assert actions[0].tolist() == [1.0, 0.0] and actions[1].tolist() == [-1.0, -1.0]
    assert redraws.redrawn == 2


def test_the_last_draw_is_kept_when_every_try_repeats() -> None:
    redraws, queue = _draws(*([[0.1, -0.1]] * TRIES))
    _, policies, counts, _ = redraws.fresh(np.zeros((1, 2), dtype=np.float32), Rounding())
    assert policies == [((4, 8), (4, 8))] and counts == [TRIES] and not queue


def test_a_repeat_is_replaced_by_the_objectives_best_allocation_not_taken() -> None:
    """The action stays as asked; the run's policies and the batch's earlier ones are all cut off."""
    redraws = Redraws({(("a", 4, 8), ("b", 4, 8))}, ("b", "a"), TRIES, "objective")
    decoder = Nearest()
    actions = np.zeros((3, 2), dtype=np.float32)
    out, policies, counts, asked = redraws.fresh(actions, decoder)
    assert policies == [((3, 8), (4, 8)), ((4, 8), (3, 8)), ((4, 8), (5, 8))] and counts == [1, 1, 1]
    assert asked == [((4, 8), (4, 8))] * 3
    assert decoder.asked == [1, 2, 3] and np.array_equal(out, actions) and redraws.redrawn == 3


def test_a_repeat_stays_when_no_allocation_is_left() -> None:
    every = {Redraws(set(), ("a",), 1).key(((w, 8),)) for w in (3, 4, 5)}
    redraws = Redraws(every, ("a",), TRIES, "objective")
    _, policies, counts, _ = redraws.fresh(np.zeros((1, 1), dtype=np.float32), Nearest())
    assert policies == [((4, 8),)] and counts == [0]


def test_the_objectives_next_best_is_the_best_allocation_not_taken(problem: SearchProblem) -> None:
    """Against every allocation of the digits CNN's four layers (49 pairs each), under a random
    objective: each answer in turn is the least weighed error within the budget once the earlier
    answers are cut off, and the policy proposed is that answer fitted to the whole-policy budget."""
    decoder = ObjectiveDecoder.build(problem, span=2.0, floor=0.5)
    action = np.random.default_rng(3).uniform(-1.0, 1.0, len(decoder.free) + 1)
    weighed, target = decoder._objective(action)
    error = sum(np.meshgrid(*weighed.errors, indexing="ij", sparse=True), np.zeros(()))
    cost = sum(np.meshgrid(*weighed.costs, indexing="ij", sparse=True), np.zeros(()))
    error = np.where(cost <= min(target, weighed.budget) * (1 + 1e-9), error, np.inf)
    taken: list[tuple[BitPair, ...]] = []
    for _ in range(4):
        found = decoder.alternative(action, taken)
        assert found is not None and found[0] not in taken
        got = sum(float(e[p.index(x)]) for e, p, x in zip(weighed.errors, weighed.pairs, found[0]))
        assert got == pytest.approx(float(error.min()), rel=1e-9, abs=1e-12)
        assert problem.budget_model.fits(problem.budget_model.policy_cost(found[1]))
        if not taken:
            assert found[1] == decoder.policy(action)
        error[tuple(p.index(x) for p, x in zip(weighed.pairs, found[0]))] = np.inf
        taken.append(found[0])


def test_redraws_needs_an_agent_and_a_count() -> None:
    with pytest.raises(InternalError, match="draw must be set"):
        Redraws(set(), ("a",), 1).fresh(np.zeros((1, 1), dtype=np.float32), Rounding())
    with pytest.raises(ConfigError, match=r"^redraws must be an integer >= 0, got -1"):
        AgentConfig(redraws=-1)
    with pytest.raises(InternalError, match="needs a decoder with alternative"):
        Redraws(set(), ("a",), 1, "objective").fresh(np.zeros((1, 1), dtype=np.float32), Rounding())
    with pytest.raises(ConfigError, match=r"^unknown redraw_from 'ilp'; choose one of agent, objective$"):
        AgentConfig(redraw_from="ilp")


def test_a_config_stored_before_redraw_from_existed_drew_from_the_agent() -> None:
    stored = to_dict(dataclasses.replace(NEXT, redraw_from="objective"))
    del stored["redraw_from"]
    assert from_dict(AgentConfig, stored, stored=True).redraw_from == "agent"


def _flags_agent(*argv: str) -> AgentConfig:
    _, job = resolve_job(build_parser("search").parse_args(["search", *argv]), "search", lambda n: {"search": search_config(n)})
    return job.section("search").agent  # type: ignore[no-any-return]


def test_the_search_flags_set_redraws_and_their_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent = _flags_agent("--redraws", "8", "--redraw-from", "objective")
    assert (agent.redraws, agent.redraw_from) == (8, "objective")
    assert _flags_agent() == AgentConfig()
    job = tmp_path / "job.toml"
    job.write_text('version = 1\nkind = "search"\n[search.agent]\nredraw_from = "objective"\nredraws = 2\n')
    agent = _flags_agent("--config", str(job), "--redraws", "3")
    assert (agent.redraws, agent.redraw_from) == (3, "objective")
    assert main(["search", "--redraw-from", "ilp", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["haq: error: unknown redraw_from 'ilp'; choose one of agent, objective"], err


@pytest.mark.parametrize(
    ("agent", "replaces"),
    [
        (AgentConfig(decision="objective", redraws=2), True),
        (AgentConfig(decision="objective", redraws=0), False),
        (AgentConfig(decision="objective", redraws=2, algo="ppo"), False),
        (AgentConfig(decision="layer", redraws=2), False),
        (AgentConfig(decision="policy", redraws=2), False),
    ],
)
def test_only_an_off_policy_objective_agent_replaces_repeats(agent: AgentConfig, replaces: bool) -> None:
    assert agent.for_problem(has_prior=False).replaces_repeats is replaces
    with pytest.raises(InternalError, match="must be resolved"):
        _ = dataclasses.replace(agent, algo="auto").replaces_repeats


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
        ("next", NEXT, 1),
        ("next-batch", NEXT, 2),
    ):
        run_search(_config(problem, agent), dataclasses.replace(with_empty_cache(problem), workers=workers), out / name)
        paths[name] = out / name
    return paths


@pytest.mark.parametrize("name", ["redraws", "batch", "next", "next-batch"])
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


@pytest.mark.parametrize("name", ["redraws", "next"])
def test_the_replay_buffer_holds_the_actions_stepped(runs: dict[str, Path], name: str) -> None:
    log = episode_log(runs[name])
    buffer = np.load(sorted(glob.glob(str(runs[name] / "checkpoint" / "*" / "buffer.npz")))[-1])
    stepped = np.asarray([e["extra"][DECODED] for e in log], dtype=np.float32)  # type: ignore[index]
    np.testing.assert_allclose(buffer["actions"][:, 0, :], stepped, atol=1e-6)


@pytest.mark.parametrize(("name", "after"), [("redraws", 6), ("batch", 7), ("next", 9), ("next-batch", 11)])
def test_a_run_with_redraws_killed_resumes_to_the_log_of_one_never_killed(
    problem: SearchProblem, runs: dict[str, Path], tmp_path: Path, name: str, after: int
) -> None:
    workers = 2 if name.endswith("batch") else 1
    cfg = _config(problem, NEXT if name.startswith("next") else OBJECTIVE)
    interrupted_search(cfg, dataclasses.replace(with_empty_cache(problem), workers=workers), tmp_path / "killed", after=after)
    run_search(cfg, dataclasses.replace(with_empty_cache(problem), workers=workers), tmp_path / "killed", resume=True)
    assert episode_log(tmp_path / "killed") == episode_log(runs[name])


@pytest.mark.parametrize("name", ["redraws", "next"])
def test_a_transfer_of_an_agent_that_redraws_acts_deterministically_then_redraws(
    runs: dict[str, Path], tmp_path: Path, cache_dir: Path, name: str
) -> None:
    """Its zero-shot episode is the actor's own deterministic action, never drawn again; its
    fine-tuning is a search and draws its repeats again."""
    from haq.transfer import TransferConfig, run_transfer, transfer_env
    from haq.transfer.run import ZERO_SHOT
    from haq.transfer.source import load_source

    cfg = TransferConfig(source=str(runs[name]), table="bismo-edge", episodes=10)
    result = run_transfer(cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir), tmp_path / "t")
    zero, rest = result.records[0], result.records[1:]
    assert zero.extra["phase"] == ZERO_SHOT and REDRAWN not in zero.extra
    keys = [tuple(sorted(r.policy.items())) for r in result.records]
    assert all(r.extra.get(REDRAWN) == TRIES for i, r in enumerate(rest, 1) if keys[i] in keys[:i])
    assert len(rest) == 10 and load_source(runs[name]).config.agent.redraws == TRIES
    assert load_source(runs[name]).config.agent.redraw_from == ("objective" if name == "next" else "agent")


def test_each_replacement_in_the_log_is_its_actions_next_best_then(problem: SearchProblem, runs: dict[str, Path]) -> None:
    """Replayed from the log alone: every replaced episode's policy is what its action's objective
    gives with the policies logged before it cut off."""
    decoder = ObjectiveDecoder.build(problem, OBJECTIVE.objective_span, OBJECTIVE.prior_floor)
    names = tuple(problem.layer_names)
    log = episode_log(runs["next"])
    replaced = [i for i, e in enumerate(log) if REDRAWN in e["extra"]]  # type: ignore[operator]
    assert replaced
    for i in replaced:
        earlier = {pairs_key((n, tuple(p)) for n, p in e["policy"].items()) for e in log[:i]}  # type: ignore[attr-defined]
        action = np.asarray([log[i]["extra"][DECODED]], dtype=np.float32)  # type: ignore[index]
        _, policies, counts, _ = Redraws(earlier, names, TRIES, "objective").fresh(action, decoder)
        assert dict(zip(names, policies[0])) == {n: tuple(p) for n, p in log[i]["policy"].items()}  # type: ignore[attr-defined]
        assert counts[0] == log[i]["extra"][REDRAWN]  # type: ignore[index]


@pytest.mark.parametrize("name", ["redraws", "next"])
def test_a_replaced_episode_records_the_repeat_it_asked_for(problem: SearchProblem, runs: dict[str, Path], name: str) -> None:
    """The policy its logged action decodes to, proposed earlier in the run; an episode not replaced records none."""
    decoder = ObjectiveDecoder.build(problem, OBJECTIVE.objective_span, OBJECTIVE.prior_floor)
    names = tuple(problem.layer_names)
    log = episode_log(runs[name])
    for i, e in enumerate(log):
        extra = e["extra"]
        assert (ASKED in extra) == (REDRAWN in extra)  # type: ignore[operator]
        if ASKED not in extra:  # type: ignore[operator]
            continue
        asked = {n: tuple(p) for n, p in extra[ASKED].items()}  # type: ignore[index]
        if name == "next":  # the action stepped is the one asked with; a redraw steps another
            assert asked == dict(zip(names, decoder.policy(np.asarray(extra[DECODED], dtype=np.float32))))  # type: ignore[index]
        assert asked in [{n: tuple(p) for n, p in earlier["policy"].items()} for earlier in log[:i]]  # type: ignore[attr-defined]


def test_redraws_an_agent_cannot_use_are_named_once_not_silently_dropped(problem: SearchProblem, tmp_path: Path) -> None:
    lines: list[str] = []
    layer = AgentConfig(decision="layer", warmup_episodes=2, hidden=(16,), redraws=TRIES)
    config = dataclasses.replace(_config(problem, layer), episodes=3)
    run_search(config, with_empty_cache(problem), tmp_path / "layer", log=lines.append)
    ignored = [line for line in lines if line.startswith("redraws = ")]
    assert ignored == [
        f"redraws = {TRIES} is ignored: it replaces an off-policy objective agent's repeats, and this search runs layer "
        "(sac) (decision objective or portfolio, not ppo)"
    ]
    assert not any(REDRAWN in e["extra"] for e in episode_log(tmp_path / "layer"))  # type: ignore[operator]
