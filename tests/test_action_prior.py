"""The sensitivity action prior: the agent's zero action is the ILP's allocation, within budget,
and every pair stays reachable; a search with it runs and records it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from envs.mixed_precision import MixedPrecisionEnv
from haq.baselines.candidates import ilp_candidates
from haq.core.errors import ConfigError
from haq.jobs.problems import make_problem
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(action_prior="sensitivity", budget=BudgetConfig(ratio=0.4)), cache_dir=cache_dir)


def _policy(env: MixedPrecisionEnv, actions: np.ndarray) -> list[tuple[int, int]]:
    env.reset(seed=0)
    pairs = []
    for a in actions:
        _, info, _ = env.decide(a)
        pairs.append((info["w_bits"], info["a_bits"]))
    return pairs


def test_prior_is_the_ilp_optimum_within_budget(problem: SearchProblem) -> None:
    assert problem.prior is not None and problem.sensitivity is not None
    bm = problem.budget_model
    assert len(problem.prior) == len(bm.layers)
    assert all(p in c.pairs for p, c in zip(problem.prior, bm.layers))
    assert bm.fits(bm.policy_cost(problem.prior))
    first = ilp_candidates(bm, problem.sensitivity, 1, 0.5)[0]
    assert tuple(problem.prior) == tuple(first.pairs)
    uniform_low = tuple(min(c.pairs) for c in bm.layers)
    assert problem.prior != uniform_low  # informative: not simply the floor


def test_zero_action_is_the_prior_and_extremes_still_reach_the_range(problem: SearchProblem) -> None:
    env = MixedPrecisionEnv(problem=problem)
    n = env.num_layers
    assert _policy(env, np.zeros((n, 2), np.float32)) == list(problem.prior or ())
    lowest = _policy(env, -np.ones((n, 2), np.float32))
    assert lowest == [min(c.pairs) for c in problem.budget_model.layers]
    plain = dataclasses.replace(problem, prior=None)
    assert _policy(MixedPrecisionEnv(problem=plain), np.zeros((n, 2), np.float32)) != list(problem.prior or ())


def test_unknown_prior_is_one_line_error() -> None:
    with pytest.raises(ConfigError, match="action_prior"):
        EnvConfig(action_prior="ilp")


def test_auto_prior_follows_what_the_reward_scores() -> None:
    from haq.evaluation.config import EvalConfig
    from haq.problem.config import RewardConfig

    assert EnvConfig().prior == "sensitivity"  # the default evaluator is cheap: clean accuracy only
    assert EnvConfig(evaluation=EvalConfig(kind="full")).prior == "uniform"
    assert EnvConfig(evaluation=EvalConfig(kind="multi")).prior == "uniform"
    assert EnvConfig(evaluation=EvalConfig(kind="full"), reward=RewardConfig(robust_weight=0.0)).prior == "sensitivity"
    assert EnvConfig(action_prior="uniform").prior == "uniform"


def test_agent_choices_resolve_for_the_problem() -> None:
    from haq.search.config import AgentConfig

    default = AgentConfig().for_problem(True)  # the objective agent: SAC, never centred, no rungs
    assert default.decision == "objective" and default.algo == "sac" and default.start_at_centre is False
    assert default.prior_rungs == 0 and default.warmup_episodes == 10 and default.ent_coef_init == 1.0
    centred = AgentConfig(decision="layer").for_problem(True)
    assert centred.start_at_centre and centred.warmup_episodes == 0 and centred.ent_coef_init == 0.01
    assert (centred.noise_sigma, centred.noise_decay) == (0.25, 0.98)
    plain = AgentConfig(decision="layer").for_problem(False)
    assert plain.start_at_centre is False and plain.warmup_episodes == 10 and plain.ent_coef_init == 1.0
    assert (plain.noise_sigma, plain.noise_decay) == (0.5, 0.99)
    forced = AgentConfig(decision="layer", start_at_centre=False, ent_coef_init=0.2).for_problem(True)
    assert forced.start_at_centre is False and forced.warmup_episodes == 10 and forced.ent_coef_init == 0.2
    assert forced.for_problem(True) == forced  # resolving twice changes nothing


def test_search_run_records_the_prior(tmp_path: Path, problem: SearchProblem) -> None:
    import json

    from haq.search.config import AgentConfig, SearchConfig
    from haq.search.run import run_search

    cfg = SearchConfig(env=problem.config, agent=AgentConfig(decision="layer"), episodes=2)
    result = run_search(cfg, problem, tmp_path / "run")
    doc = json.loads((result.run_dir / "config.json").read_text())
    assert doc["action_prior"] == {n: list(p) for n, p in zip(problem.layer_names, problem.prior or ())}
    first = result.records[0].policy  # a centred agent's first policy is its noise-free action: the prior itself
    assert [tuple(first[n]) for n in problem.layer_names] == list(problem.prior or ())
