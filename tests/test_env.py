"""MixedPrecisionEnv: the Gymnasium / SB3 contract, determinism, budget projection, info, errors."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Callable

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.mixed_precision import OBS_FEATURES, MixedPrecisionEnv
from haq.core.errors import ConfigError, HaqError, TableError, UsageError
from haq.jobs.problems import make_problem
from haq.problem.budget import LayerChoices, lower_to_fit, map_action, project
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.quant import QuantPolicy
from haq.tables.schema import Correction, GraphExtras, TransitionRule, network_fingerprint
from haq.tables.table import CostTable
from haq.workload import WorkloadConfig


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(), cache_dir=cache_dir)


def _rollout(env: MixedPrecisionEnv, actions: np.ndarray, seed: int | None = None) -> tuple[list[np.ndarray], float, list[dict]]:
    obs, _ = env.reset(seed=seed)
    seen, infos, reward = [obs], [], 0.0
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        seen.append(obs)
        infos.append(info)
        assert not truncated
    assert terminated
    return seen, float(reward), infos


def test_checkers_pass_without_warnings(problem: SearchProblem) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(MixedPrecisionEnv(problem=problem), skip_render_check=True)
        sb3_check_env(MixedPrecisionEnv(problem=problem), warn=True)


def test_registered_and_default_config_needs_nothing() -> None:
    assert envs.ENV_ID in gymnasium.registry
    env = gymnasium.make(envs.ENV_ID)
    obs, info = env.reset(seed=0)
    assert obs.shape == (len(OBS_FEATURES),) and obs.dtype == np.float32
    assert info["layer"] == "conv1"
    env.close()


def test_same_seed_same_episode(problem: SearchProblem) -> None:
    actions = np.random.default_rng(7).uniform(-1, 1, (len(problem.layer_names), 2)).astype(np.float32)
    a = _rollout(MixedPrecisionEnv(problem=problem), actions, seed=3)
    b = _rollout(MixedPrecisionEnv(problem=problem), actions, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    assert a[1] == b[1]
    assert [i["policy"] for i in a[2][-1:]] == [i["policy"] for i in b[2][-1:]]


def test_observations_are_finite_and_in_bounds(problem: SearchProblem) -> None:
    env = MixedPrecisionEnv(problem=problem)
    actions = np.random.default_rng(0).uniform(-1, 1, (len(problem.layer_names), 2)).astype(np.float32)
    for obs in _rollout(env, actions)[0]:
        assert env.observation_space.contains(obs) and np.all(np.isfinite(obs))
    hw = np.array([env._static[i][14:16] for i in range(env.num_layers)])
    assert np.all(hw[:, 0] <= hw[:, 1]) and 0 < hw[:, 1].sum() <= 1 + 1e-6


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.8])
def test_budget_always_respected_and_applied_bits_reported(cache_dir: Path, problem: SearchProblem, ratio: float) -> None:
    cfg = EnvConfig(budget=BudgetConfig(ratio=ratio))
    prob = make_problem(cfg, cache_dir=cache_dir) if ratio != 0.5 else problem
    env = MixedPrecisionEnv(problem=prob)
    rng = np.random.default_rng(int(ratio * 100))
    for _ in range(8):
        actions = rng.choice([-1.0, 1.0, 0.3], size=(env.num_layers, 2)).astype(np.float32)
        _, _, infos = _rollout(env, actions)
        applied = [(i["w_bits"], i["a_bits"]) for i in infos]
        assert prob.budget_model.policy_cost(applied) <= prob.budget.target * (1 + 1e-9)
        assert infos[-1]["policy"] == {n: list(p) for n, p in zip(prob.layer_names, applied)}
        assert infos[-1]["metrics"]["latency_ms"] <= prob.budget.target * (1 + 1e-9)
        centres = prob.prior or [None] * len(prob.budget_model.layers)
        for info, choices, centre in zip(infos, prob.budget_model.layers, centres):
            assert (info["w_bits"], info["a_bits"]) in choices.pairs
            assert info["projected"] == ((info["w_bits"], info["a_bits"]) != info["requested_bits"])
            assert map_action(info["applied_action"], choices.pairs, centre) == (info["w_bits"], info["a_bits"])


def test_all_max_actions_get_projected(problem: SearchProblem) -> None:
    env = MixedPrecisionEnv(problem=problem)
    _, _, infos = _rollout(env, np.ones((env.num_layers, 2), np.float32))
    assert infos[0]["requested_bits"] == (8, 8) and any(i["projected"] for i in infos)


@pytest.mark.parametrize("rule", ["shift", "ceiling"])
def test_repairing_projections_apply_every_request_and_repair_the_whole_episode(problem: SearchProblem, rule: str) -> None:
    prob = build_problem(dataclasses.replace(problem.config, projection=rule), table=problem.table, workload=problem.workload)
    env = MixedPrecisionEnv(problem=prob)
    check_env(env, skip_render_check=True)
    bm = prob.budget_model
    _, _, infos = _rollout(env, np.ones((env.num_layers, 2), np.float32))
    assert all(i["requested_bits"] == (i["w_bits"], i["a_bits"]) == (8, 8) and not i["projected"] for i in infos)
    final = [tuple(p) for p in infos[-1]["policy"].values()]
    assert final == lower_to_fit([(8, 8)] * env.num_layers, bm, rule) and infos[-1]["lowered"] == env.num_layers
    assert bm.fits(bm.policy_cost(final)) and infos[-1]["metrics"]["latency_ms"] <= prob.budget.target * (1 + 1e-9)
    # the deficit is spread: no layer ends more than one bit below the widest one (stepwise leaves the tail at the floor)
    assert max(max(p) for p in final) - min(max(p) for p in final) <= 1
    _, _, stepwise = _rollout(MixedPrecisionEnv(problem=problem), np.ones((env.num_layers, 2), np.float32))
    assert stepwise[-1]["policy"] != infos[-1]["policy"] and stepwise[-1]["lowered"] == 0
    _, _, lowest = _rollout(env, -np.ones((env.num_layers, 2), np.float32))
    assert lowest[-1]["lowered"] == 0 and all(p == [2, 2] for p in lowest[-1]["policy"].values())


def test_pinned_first_and_last_layers(cache_dir: Path) -> None:
    prob = make_problem(EnvConfig(pin_first_last=8), cache_dir=cache_dir)
    env = MixedPrecisionEnv(problem=prob)
    _, _, infos = _rollout(env, -np.ones((env.num_layers, 2), np.float32))
    assert (infos[0]["w_bits"], infos[0]["a_bits"]) == (8, 8) and (infos[-1]["w_bits"], infos[-1]["a_bits"]) == (8, 8)


@given(
    u=st.tuples(st.floats(-1, 1), st.floats(-1, 1)),
    costs=st.lists(st.floats(0.01, 10), min_size=4, max_size=4),
    allowance=st.floats(0.01, 12),
)
@settings(max_examples=200, deadline=None)
def test_projection_never_exceeds_allowance_when_feasible(u: tuple[float, float], costs: list[float], allowance: float) -> None:
    pairs = ((2, 2), (2, 8), (8, 2), (8, 8))
    choices = LayerChoices("l", pairs, tuple(costs))
    cost = dict(zip(pairs, costs))
    desired = map_action(np.array(u), pairs)
    cheapest = min(pairs, key=lambda p: (cost[p], -p[0], -p[1]))
    applied = project(desired, choices, lambda p: cost[p] <= allowance, cheapest)
    if allowance >= min(costs):
        assert cost[applied] <= allowance
    if cost[desired] <= allowance:
        assert applied == desired
    assert applied[0] <= desired[0] and applied[1] <= desired[1] or cost[applied] == min(costs)


def test_action_mapping_covers_every_width() -> None:
    pairs = tuple((w, a) for w in (2, 4, 8) for a in (2, 4, 8))
    seen = {map_action(np.array([x, y]), pairs) for x in np.linspace(-1, 1, 13) for y in np.linspace(-1, 1, 13)}
    assert seen == set(pairs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EnvConfig(budget=BudgetConfig(ratio=0.01)), "achievable range"),
        (lambda: EnvConfig(table="no_such_table"), "bitfusion"),
        (lambda: EnvConfig(budget=BudgetConfig(metric="watts")), "latency, energy, size"),
        (lambda: EnvConfig(min_bits=6, max_bits=4), "bit range"),
        (lambda: EnvConfig(workload=WorkloadConfig(model="nope")), "digits_cnn"),
    ],
)
def test_bad_config_is_one_line_error(cache_dir: Path, make: Callable[[], EnvConfig], message: str) -> None:
    with pytest.raises(HaqError) as err:
        make_problem(make(), cache_dir=cache_dir)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nan_budget_and_bad_action_rejected(problem: SearchProblem) -> None:
    with pytest.raises(ConfigError, match="finite"):
        BudgetConfig(ratio=float("nan"))
    env = MixedPrecisionEnv(problem=problem)
    env.reset(seed=0)
    with pytest.raises(UsageError, match="finite numbers"):
        env.step(np.array([np.nan, 0.0], np.float32))


def test_stepping_a_finished_episode_is_a_usage_error(problem: SearchProblem) -> None:
    env = MixedPrecisionEnv(problem=problem)
    _rollout(env, np.zeros((env.num_layers, 2), np.float32), seed=0)
    with pytest.raises(UsageError, match="after the episode ended"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(UsageError, match="pass either config or problem"):
        MixedPrecisionEnv(config=EnvConfig(pin_first_last=8), problem=problem)


def test_problem_layer_resolves_no_names(problem: SearchProblem) -> None:
    """build_problem takes the table it is given; hardware feedback needs a measuring source built above it."""
    with pytest.raises(TypeError):
        build_problem(EnvConfig())  # type: ignore[call-arg]
    feedback = EnvConfig(evaluation=dataclasses.replace(EnvConfig().evaluation, hardware_feedback=True))
    with pytest.raises(ConfigError, match="make_problem"):
        build_problem(feedback, table=problem.table, workload=problem.workload)
    with pytest.raises(UsageError, match="another workload config"):
        build_problem(EnvConfig(workload=WorkloadConfig(seed=1)), table=problem.table, workload=problem.workload)


def test_given_latency_source_prices_latency_and_table_the_rest(problem: SearchProblem) -> None:
    class Doubled:
        def policy_cost(self, layers: object, policy: QuantPolicy, metric: str = "latency") -> float:
            return 2.0 * problem.table.policy_cost(problem.workload.layers, policy, metric)

    doubled = build_problem(problem.config, table=problem.table, latency_source=Doubled(), workload=problem.workload)
    policy = QuantPolicy.uniform(problem.layer_names, 8)
    assert doubled.evaluator.evaluate(policy).latency_ms == pytest.approx(2.0 * problem.evaluator.evaluate(policy).latency_ms)
    assert doubled.budget == problem.budget


# ---------------------------------------------------------------- non-additive tables


def _non_additive(base: CostTable, layers: list, boundary: bool, corrected: bool) -> CostTable:
    """``base`` with a cost at every precision change between layers (``boundary``: about 7 % of
    the budget per change) and / or a fitted correction (``corrected``: ×1.25, an offset and a
    cost per 8-bit-activation layer), so the whole-policy cost is not the sum of layer costs."""
    pairs = [(w, a) for w in range(2, 9) for a in range(2, 9)]
    rules = (
        tuple(TransitionRule(src, dst, 1e-4, 2e-9, 2e-4, 4e-9, "measured") for src in pairs for dst in pairs if src != dst)
        if boundary
        else ()
    )
    corrections = (Correction(network_fingerprint(layers, 1), "digits_cnn", "latency", 1.25, 1e-4, 5, 3e-5),) if corrected else ()
    return base.with_graph(GraphExtras(rules=rules, corrections=corrections))


def test_a_table_pricing_the_cheapest_policy_below_zero_is_named_and_refused_under_strict(problem: SearchProblem) -> None:
    """Graph-aware terms fitted elsewhere can price a network below zero (a fit on made-up timings
    did, in tests/test_fingerprint.py); the search is then paid for an impossible cost, so it says
    so in one warning, and ``--strict`` refuses the table."""
    layers = problem.workload.layers
    shifted = Correction(network_fingerprint(layers, 1), "digits_cnn", "latency", 1.0, -1.0, 5)
    table = problem.table.with_graph(GraphExtras(corrections=(shifted,)))  # type: ignore[attr-defined]
    lines: list[str] = []
    prob = build_problem(problem.config, table=table, workload=problem.workload, log=lines.append)
    assert prob.budget.cheapest < 0
    (line,) = [x for x in lines if x.startswith("warning:")]
    assert "prices digits_cnn's cheapest policy at -" in line and "haq tables fit --model digits_cnn" in line
    with pytest.raises(TableError, match="refused under --strict") as refused:
        build_problem(problem.config, table=table, workload=problem.workload, log=lines.append, strict=True)
    assert "cheapest policy at -" in str(refused.value) and "\n" not in str(refused.value)
    quiet: list[str] = []
    build_problem(problem.config, table=problem.table, workload=problem.workload, log=quiet.append, strict=True)
    assert not [x for x in quiet if x.startswith("warning:")]


def _episodes(num_layers: int) -> list[np.ndarray]:
    """Seeded random episodes plus the extremes: all dearest, all cheapest, alternating (a boundary
    at every layer), dearest-first and dearest-last."""
    rng = np.random.default_rng(2024)
    hi, lo = np.ones(2), -np.ones(2)
    fixed = [
        [hi] * num_layers,
        [lo] * num_layers,
        [hi if i % 2 else lo for i in range(num_layers)],
        [hi] + [lo] * (num_layers - 1),
        [lo] * (num_layers - 1) + [hi],
    ]
    random = [rng.uniform(-1, 1, (num_layers, 2)) for _ in range(10)]
    return [np.asarray(e, np.float32) for e in fixed + random]


@pytest.mark.parametrize(("boundary", "corrected"), [(True, False), (False, True), (True, True)])
def test_non_additive_tables_always_end_within_budget(
    problem: SearchProblem,
    boundary: bool,
    corrected: bool,
) -> None:
    layers = problem.workload.layers
    table = _non_additive(problem.table, layers, boundary, corrected)  # type: ignore[arg-type]
    prob = build_problem(problem.config, table=table, workload=problem.workload)
    target = prob.budget.target
    env = MixedPrecisionEnv(problem=prob)
    costs, gaps = [], []
    for actions in _episodes(env.num_layers):
        _, _, infos = _rollout(env, actions)
        policy = _policy_of(prob, infos)
        cost = table.policy_cost(layers, policy)  # priced by the table itself, not by the budget model
        assert cost <= target * (1 + 1e-9), (infos[-1]["policy"], cost / target)
        assert infos[-1]["metrics"]["latency_ms"] == pytest.approx(cost)
        costs.append(cost / target)
        additive = sum(c.cost((i["w_bits"], i["a_bits"])) for c, i in zip(prob.budget_model.layers, infos))
        gaps.append(cost - additive)
    assert max(costs) > 0.9  # the budget binds: the projection had work to do
    assert max(gaps) > 0.05 * target  # and the table is not the sum of its layers


def _policy_of(prob: SearchProblem, infos: list[dict]) -> QuantPolicy:
    return prob.policy([(i["w_bits"], i["a_bits"]) for i in infos])
