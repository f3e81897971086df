"""Search baselines: the solvers against brute force, greedy's monotonicity, the sensitivity
proxy, and each baseline run on the digits CNN writing a run directory within budget."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from search_fakes import AnalyticTable

from haq.baselines import BaselineConfig, estimate_sensitivity, run_baseline
from haq.baselines.candidates import random_assignment
from haq.cli import main as haq_main
from haq.core import config as serial
from haq.core.errors import ConfigError, HaqError, RunDirError
from haq.jobs.problems import make_problem
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.solvers import (
    cheaper_step,
    choice_cost,
    choice_error,
    greedy_path,
    pareto_front,
    solve_ilp,
)
from haq.quant import LayerInfo, LayerSignature, QuantPolicy
from haq.runs.rundir import RunDir
from haq.runs.sensitivity_file import SENSITIVITY_FILE, SENSITIVITY_VERSION
from haq.workload import Workload


def random_problem(seed: int, layers: int = 4, options: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    costs = [rng.uniform(1.0, 10.0, options) for _ in range(layers)]
    errors = [rng.uniform(0.0, 5.0, options) for _ in range(layers)]
    return costs, errors


def brute_force(costs: Sequence[np.ndarray], errors: Sequence[np.ndarray], budget: float) -> list[tuple[float, tuple[int, ...]]]:
    """Every feasible choice with its error, best first."""
    out = []
    for choice in itertools.product(*(range(c.size) for c in costs)):
        if choice_cost(costs, choice) <= budget:
            out.append((choice_error(errors, choice), choice))
    return sorted(out)


@pytest.mark.parametrize("seed", range(6))
def test_ilp_optimum_matches_brute_force(seed: int) -> None:
    costs, errors = random_problem(seed)
    lo, hi = sum(c.min() for c in costs), sum(c.max() for c in costs)
    for budget in np.linspace(lo, hi, 5):
        feasible = brute_force(costs, errors, budget)
        choice = solve_ilp(costs, errors, budget)
        assert choice is not None
        assert choice_cost(costs, choice) <= budget + 1e-9
        assert choice_error(errors, choice) == pytest.approx(feasible[0][0], abs=1e-9)
        if len(feasible) > 1:  # the no-good cut yields the second-best distinct solution
            second = solve_ilp(costs, errors, budget, exclude=[choice])
            assert second is not None and second != choice
            assert choice_error(errors, second) == pytest.approx(feasible[1][0], abs=1e-9)


def test_ilp_reports_an_infeasible_budget() -> None:
    costs, errors = random_problem(0)
    assert solve_ilp(costs, errors, sum(c.min() for c in costs) * 0.99) is None


def test_pareto_front_trades_cost_for_error() -> None:
    cost = np.array([4.0, 1.0, 3.0, 2.0, 3.0])
    error = np.array([0.0, 5.0, 1.0, 4.0, 2.0])
    front = pareto_front(cost, error)
    assert front == [0, 2, 3, 1]  # option 4 (cost 3, error 2) is beaten by option 2
    assert all(cost[a] > cost[b] and error[a] < error[b] for a, b in zip(front, front[1:]))


@pytest.mark.parametrize("seed", range(4))
def test_greedy_is_monotone_in_budget(seed: int) -> None:
    costs, errors = random_problem(seed, layers=5, options=5)
    path = greedy_path(costs, errors)
    assert choice_error(errors, path[0]) == pytest.approx(sum(e.min() for e in errors))
    assert choice_cost(costs, path[-1]) == pytest.approx(sum(c.min() for c in costs))
    lo, hi = sum(c.min() for c in costs), sum(c.max() for c in costs)
    stops = []
    for budget in np.linspace(lo, hi, 25):
        stop = next(c for c in path if choice_cost(costs, c) <= budget + 1e-12)
        assert choice_cost(costs, stop) <= budget + 1e-12
        stops.append((choice_cost(costs, stop), choice_error(errors, stop)))
    assert all(b[0] >= a[0] - 1e-12 and b[1] <= a[1] + 1e-12 for a, b in zip(stops, stops[1:]))


def test_cheaper_step_lowers_cost_and_stops_at_the_floor() -> None:
    costs, errors = random_problem(3)
    choice = tuple(int(np.argmax(c)) for c in costs)
    steps = 0
    while (nxt := cheaper_step(costs, errors, choice)) is not None:
        assert choice_cost(costs, nxt) < choice_cost(costs, choice)
        choice, steps = nxt, steps + 1
    assert choice_cost(costs, choice) == pytest.approx(sum(c.min() for c in costs))
    assert steps > 0


def test_sensitivity_falls_with_bits(digits_workload: Workload, cpu: object) -> None:
    from haq.baselines import SensitivityConfig

    s = estimate_sensitivity(
        digits_workload.model, digits_workload.layers, digits_workload.data, cpu, SensitivityConfig(samples=64)
    )
    assert set(s.layers) == set(digits_workload.layer_names) and s.samples == 64
    for layer in s.layers.values():
        for terms in (layer.weight, layer.activation):
            values = [terms[b] for b in range(2, 9)]
            assert all(v >= 0 for v in values) and terms[32] == 0.0
            assert all(a > b for a, b in zip(values, values[1:])), values
    with pytest.raises(ConfigError, match="valid"):
        s.error(digits_workload.layer_names[0], 9, 8)


@pytest.fixture(scope="module")
def problem(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(budget=BudgetConfig(ratio=0.4)), cache_dir=cache_dir, table=AnalyticTable())


@pytest.mark.parametrize("method", ["uniform", "random", "greedy", "ilp"])
def test_baseline_writes_a_run_within_budget(problem: SearchProblem, tmp_path: Path, method: str) -> None:
    cfg = BaselineConfig(method=method, evaluations=3, seed=1)
    seen = []
    result = run_baseline(cfg, problem, tmp_path / method, progress=seen.append)
    run = RunDir(tmp_path / method)
    records = run.read_episodes()
    assert [r.episode for r in records] == list(range(len(records))) and 1 <= len(records) <= 3
    assert [p.episode for p in seen] == [r.episode for r in records]
    assert seen[-1].best_reward == result.best.reward and seen[-1].best_episode == result.best.episode
    assert all(r.metrics.latency_ms <= problem.budget.target * (1 + 1e-9) for r in records)
    assert all(r.extra["method"] == method for r in records)
    best = QuantPolicy.load(run.best_path)
    best.check_layers(problem.workload.layers)
    assert best.meta["reward"] == pytest.approx(max(r.reward for r in records))
    doc = run.read_config()
    assert doc["kind"] == "baseline" and doc["config"]["baseline"]["method"] == method
    assert doc["budget"]["target"] == pytest.approx(problem.budget.target)
    if method in ("greedy", "ilp"):
        recorded = json.loads((run.path / SENSITIVITY_FILE).read_text())
        assert recorded["samples"] == cfg.sensitivity.samples and recorded["version"] == SENSITIVITY_VERSION
    if method == "random":  # seeded: the same draws again
        again = run_baseline(cfg, problem, tmp_path / "again")
        assert [r.policy for r in again.records] == [r.policy for r in records]


@pytest.mark.parametrize("rule", ["shift", "ceiling"])
def test_random_baseline_draws_under_the_problems_projection(
    problem: SearchProblem, cache_dir: Path, tmp_path: Path, rule: str
) -> None:
    repaired = make_problem(dataclasses.replace(problem.config, projection=rule), cache_dir=cache_dir, table=problem.table)
    cfg = BaselineConfig(method="random", evaluations=6, seed=3)
    stepwise = run_baseline(cfg, problem, tmp_path / "stepwise").records
    records = run_baseline(cfg, repaired, tmp_path / rule).records
    names = problem.layer_names
    draws = np.random.default_rng(cfg.seed)
    for record in records:
        expected = random_assignment(repaired.budget_model, draws, rule)
        assert tuple(tuple(record.policy[n]) for n in names) == expected
        assert repaired.budget_model.fits(repaired.budget_model.policy_cost(expected))
    assert [r.policy for r in records] != [r.policy for r in stepwise]  # the field is not ignored
    assert RunDir(tmp_path / rule).read_config()["config"]["env"]["projection"] == rule


def test_baseline_resume_continues_and_refuses_other_settings(problem: SearchProblem, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_baseline(BaselineConfig(method="random", evaluations=2), problem, out)
    with pytest.raises(RunDirError, match="already holds a run"):
        run_baseline(BaselineConfig(method="random", evaluations=2), problem, out)
    with pytest.raises(RunDirError, match="cannot resume"):
        run_baseline(BaselineConfig(method="random", evaluations=2, seed=5), problem, out, resume=True)
    full = run_baseline(BaselineConfig(method="random", evaluations=2), problem, out, resume=True)
    assert [r.episode for r in RunDir(out).read_episodes()] == [0, 1] and len(full.records) == 2


class BoundaryTable(AnalyticTable):
    """Adds a fixed cost for every change of precision between consecutive layers, as CPU
    runtimes pay for quantize/dequantize at precision boundaries (not additive per layer)."""

    def policy_cost(self, layers: Sequence[LayerInfo], policy: QuantPolicy, metric: str = "latency") -> float:
        bits = [(policy[x.name].w_bits, policy[x.name].a_bits) for x in layers]
        changes = sum(a != b for a, b in zip(bits, bits[1:]))
        return super().policy_cost(layers, policy, metric) + 0.4 * changes


def test_ilp_is_repaired_to_fit_a_whole_policy_cost(cache_dir: Path, tmp_path: Path) -> None:
    table = BoundaryTable()
    problem = make_problem(EnvConfig(budget=BudgetConfig(ratio=0.4)), cache_dir=cache_dir, table=table)
    result = run_baseline(BaselineConfig(method="ilp", evaluations=2), problem, tmp_path / "ilp")
    layers = problem.workload.layers
    for r in result.records:
        assert table.policy_cost(layers, r.quant_policy()) <= problem.budget.target * (1 + 1e-9)
    assert any(r.extra["repair_steps"] > 0 for r in result.records)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "annealing"}, "unknown baseline method 'annealing'; choose one of uniform, random, greedy, ilp"),
        ({"evaluations": 0}, "evaluations must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"ladder_floor": 0.0}, r"ladder_floor must be in \(0, 1\]"),
    ],
)
def test_bad_baseline_settings_are_one_line_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        BaselineConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_baseline_config_round_trips_through_the_generic_serializer() -> None:
    from haq.baselines import SensitivityConfig

    cfg = BaselineConfig(method="greedy", evaluations=4, seed=2, ladder_floor=0.25, sensitivity=SensitivityConfig(samples=64))
    assert serial.from_dict(BaselineConfig, json.loads(json.dumps(serial.to_dict(cfg)))) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        serial.from_dict(BaselineConfig, {"method": "ilp", "bogus": 1})


class SplitTable(AnalyticTable):
    """The first layer runs only 4 or 8 bits, the others only 2 or 8: 8/8 is the one uniform pair."""

    def supported_bits(self, sig: LayerSignature) -> list[tuple[int, int]]:
        return [(4, 4), (8, 8)] if sig.in_channels == 1 else [(2, 2), (8, 8)]


def test_uniform_refuses_a_budget_no_uniform_policy_meets(cache_dir: Path, tmp_path: Path) -> None:
    problem = make_problem(EnvConfig(budget=BudgetConfig(ratio=0.6)), cache_dir=cache_dir, table=SplitTable())
    with pytest.raises(HaqError, match=r"no uniform .* pair fits the latency budget") as info:
        run_baseline(BaselineConfig(method="uniform"), problem, tmp_path / "u")
    assert "\n" not in str(info.value) and not (tmp_path / "u").exists()
    ilp = run_baseline(BaselineConfig(method="ilp", evaluations=1), problem, tmp_path / "ilp")
    assert ilp.best.metrics.latency_ms <= problem.budget.target


def test_baseline_command_writes_a_run_and_prints_the_best(
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))
    out = tmp_path / "greedy"
    argv = [
        "baseline",
        "--method",
        "greedy",
        "--device",
        "bitfusion",
        "--evaluator",
        "cheap",
        "--evaluations",
        "2",
        "--sensitivity-samples",
        "64",
        "--out",
        str(out),
    ]
    assert haq_main(argv) == 0
    printed = capsys.readouterr().out
    assert f"baseline greedy: 2 evaluations in {out}" in printed and "| conv1 |" in printed
    assert "export_weights" not in json.loads((out / "config.json").read_text())  # an analytical table times no container
    assert "export_weights" not in QuantPolicy.load(out / "best_policy.json").meta
    assert len(RunDir(out).read_episodes()) == 2 and (out / "best_policy.json").is_file()
    doc = RunDir(out).read_config()  # a baseline maps no actions: no action prior is solved or recorded
    assert doc["config"]["env"]["action_prior"] == "uniform" and "action_prior" not in doc
    assert haq_main(argv) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert haq_main([*argv[:2], "simulated-annealing", *argv[3:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "haq: error: unknown baseline method 'simulated-annealing'; choose one of uniform, random, greedy, ilp"


def test_baseline_command_refuses_an_unknown_projection_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["baseline", "--method", "random", "--projection", "greedy", "--out", str(tmp_path / "r")]
    assert haq_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose one of stepwise, shift, ceiling" in err[0], err
    assert not (tmp_path / "r").exists()
