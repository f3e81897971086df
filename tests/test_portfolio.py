"""A portfolio search (``AgentConfig.decision = "portfolio"``): its agents run one after the other,
each for its share of the episodes, the first exactly as it would alone; a run killed anywhere,
the boundary between two agents included, resumes to the log of one never killed; its settings
are validated in one line, and a transfer continues the agent its checkpoint holds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from run_helpers import episode_log, interrupted_search, with_empty_cache

from haq.core import config as serial
from haq.core.errors import ConfigError, InternalError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.reward_sensitivity import reward_sensitivity
from haq.runs.checkpoint import RunStore
from haq.runs.progress import Progress
from haq.runs.sensitivity_file import SENSITIVITY_FILE, SENSITIVITY_VERSION
from haq.search.checkpoint import PHASE
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.search.whole_policy import DECODED
from haq.transfer import TransferConfig, run_transfer, transfer_env
from haq.transfer.source import load_source

CHEAP = EvalConfig(kind="cheap", val_samples=120)
PORTFOLIO = AgentConfig(decision="portfolio", warmup_episodes=2, hidden=(16,))
EPISODES = 8


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(evaluation=CHEAP, action_prior="uniform"), cache_dir=cache_dir)


def _config(problem: SearchProblem, agent: AgentConfig = PORTFOLIO, episodes: int = EPISODES) -> SearchConfig:
    return SearchConfig(env=problem.config, agent=agent, episodes=episodes, seed=3)


@pytest.fixture(scope="module")
def whole(problem: SearchProblem, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("portfolio") / "whole"
    run_search(_config(problem), with_empty_cache(problem), out)
    return out


def test_each_agent_proposes_its_share_the_first_as_it_would_alone(problem: SearchProblem, whole: Path, tmp_path: Path) -> None:
    log = episode_log(whole)
    assert [e["episode"] for e in log] == list(range(EPISODES))
    half = EPISODES // 2
    assert not any(DECODED in e["extra"] for e in log[:half])  # the per-layer agent
    assert all(DECODED in e["extra"] for e in log[half:])  # the objective agent: each policy from its decoded objective
    alone = dataclasses.replace(PORTFOLIO, decision="layer")
    run_search(_config(problem, alone, half), with_empty_cache(problem), tmp_path / "alone")
    assert episode_log(tmp_path / "alone") == log[:half]
    store = RunStore(whole)
    store.restore()
    assert store.checkpoint is not None and store.checkpoint.state[PHASE] == 1


def test_the_run_records_the_sensitivity_its_objective_agent_allocates_by(
    problem: SearchProblem, whole: Path, tmp_path: Path
) -> None:
    recorded = json.loads((whole / SENSITIVITY_FILE).read_text())
    expected = json.loads(json.dumps(reward_sensitivity(problem.config, problem.workload).to_dict()))
    assert recorded == {"version": SENSITIVITY_VERSION, **expected}
    assert recorded["estimator"] == "fisher" and sorted(recorded["layers"]) == sorted(problem.layer_names)
    alone = dataclasses.replace(PORTFOLIO, decision="layer")
    run_search(_config(problem, alone, 2), with_empty_cache(problem), tmp_path / "alone")
    assert not (tmp_path / "alone" / SENSITIVITY_FILE).exists()  # it allocates by none, so it records none


@pytest.mark.parametrize("after", [1, EPISODES // 2 - 1, EPISODES // 2 + 1])
def test_a_portfolio_killed_anywhere_resumes_to_the_log_of_one_never_killed(
    problem: SearchProblem, whole: Path, tmp_path: Path, after: int
) -> None:
    """Killed inside the first agent's share, right after its last episode (its checkpoint is the
    first agent's, which the second must not load), or inside the second's."""
    cfg = _config(problem)
    interrupted_search(cfg, with_empty_cache(problem), tmp_path / "killed", after=after)
    seen: list[Progress] = []
    run_search(cfg, with_empty_cache(problem), tmp_path / "killed", resume=True, progress=seen.append)
    assert episode_log(tmp_path / "killed") == episode_log(whole)
    assert [p.episode for p in seen] == list(range(after + 1, EPISODES))
    assert {p.episodes for p in seen} == {EPISODES}  # progress counts the whole run's episodes, not a share's


def test_phases_split_the_episodes_in_order() -> None:
    for has_prior in (False, True):
        assert [(a.decision, end) for a, end in PORTFOLIO.phases(300, has_prior)] == [("layer", 150), ("objective", 300)]
    three = AgentConfig(decision="portfolio", portfolio=("objective", "policy", "layer"))
    assert [(a.decision, end) for a, end in three.phases(100, False)] == [("objective", 33), ("policy", 66), ("layer", 100)]
    assert all(a.portfolio == three.portfolio for a, _ in three.phases(100, False))
    single = AgentConfig(decision="objective")
    assert single.phases(60, False) == ((single, 60),)
    assert AgentConfig().for_problem(True).decision == "objective"
    for unresolved in (PORTFOLIO, AgentConfig()):
        with pytest.raises(InternalError):
            unresolved.for_problem(False)
    assert serial.from_dict(AgentConfig, serial.to_dict(three)) == three


def test_the_default_runs_the_portfolio_only_where_the_problem_has_no_action_prior(
    problem: SearchProblem, whole: Path, tmp_path: Path
) -> None:
    default = AgentConfig()
    assert default.decision == "auto"
    assert [(a.decision, end) for a, end in default.phases(300, False)] == [("layer", 150), ("objective", 300)]
    assert [(a.decision, end) for a, end in default.phases(300, True)] == [("objective", 300)]  # the objective agent alone
    for no_objective in (AgentConfig(algo="ddpg"), AgentConfig(algo="td3"), AgentConfig(start_at_centre=True)):
        assert no_objective.resolved_decision(False) == no_objective.resolved_decision(True) == "layer"
    assert AgentConfig(algo="sac").resolved_decision(False) == AgentConfig(algo="ppo").resolved_decision(False) == "portfolio"
    assert AgentConfig(algo="sac").resolved_decision(True) == AgentConfig(algo="ppo").resolved_decision(True) == "objective"
    run_search(_config(problem, dataclasses.replace(PORTFOLIO, decision="auto")), with_empty_cache(problem), tmp_path / "auto")
    assert problem.prior is None and episode_log(tmp_path / "auto") == episode_log(whole)
    assert load_source(tmp_path / "auto").config.agent.decision == "objective"


def test_a_config_stored_before_prior_decision_existed_ran_the_per_layer_agent_where_it_had_a_prior() -> None:
    assert AgentConfig(prior_decision="layer").resolved_decision(True) == "layer"
    assert AgentConfig(prior_decision="layer").resolved_decision(False) == "portfolio"  # it decides nothing there
    stored = serial.to_dict(AgentConfig())
    del stored["prior_decision"]
    assert serial.from_dict(AgentConfig, stored, stored=True).resolved_decision(True) == "layer"
    with pytest.raises(ConfigError, match="prior_decision"):
        AgentConfig(prior_decision="policy")


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({"portfolio": ("layer",)}, r"^portfolio must list two or more different decisions of layer, policy, objective, got \["),
        ({"portfolio": ("layer", "layer")}, r"^portfolio must list two or more different decisions"),
        ({"portfolio": ("layer", "portfolio")}, r"^portfolio must list two or more different decisions"),
        ({"portfolio": ("layer", 3)}, r"^portfolio must list two or more different decisions"),
        ({"algo": "ddpg"}, r"^decision 'objective' needs agent sac, ppo or auto, not ddpg: "),
        ({"start_at_centre": True}, r"^decision 'objective' cannot start at the centre: "),
    ],
)
def test_a_portfolio_that_cannot_run_is_refused_in_one_line(changes: dict[str, object], refused: str) -> None:
    with pytest.raises(ConfigError, match=refused):
        AgentConfig(decision="portfolio", **changes)  # type: ignore[arg-type]


def test_a_transfer_continues_the_member_whose_agent_the_checkpoint_holds(
    problem: SearchProblem, whole: Path, tmp_path: Path, cache_dir: Path
) -> None:
    source = load_source(whole)
    assert source.config.agent.decision == "objective" and source.describe()["decision"] == "objective"
    cfg = TransferConfig(source=str(whole), table="bismo-edge", episodes=1)
    result = run_transfer(cfg, make_problem(transfer_env(cfg), cache_dir=cache_dir), tmp_path / "t")
    assert [r.episode for r in result.records] == [0, 1]
    assert all(DECODED in r.extra for r in result.records)  # objectives, decoded with the new device's costs
    interrupted_search(_config(problem), with_empty_cache(problem), tmp_path / "early", after=1)
    early = load_source(tmp_path / "early")  # killed in the first share: its checkpoint holds the per-layer agent
    assert early.config.agent.decision == "layer"
    assert dataclasses.replace(early.config, agent=PORTFOLIO) == _config(problem)
