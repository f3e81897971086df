"""A reusing transfer's zero-shot policy: the non-increasing fit of accuracy on estimated error,
the allocation it predicts best on the new device, and the transfer starting there only when
that prediction beats the best reused policy's exact reward."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import isotonic_regression

from haq.core.errors import ConfigError, RunDirError
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import PolicyCosts
from haq.evaluation.metrics import PolicyMetrics
from haq.jobs.problems import make_problem
from haq.problem.accuracy_fit import AccuracyFit, antitonic_fit
from haq.problem.allocation import budget_ladder, sensitivity_rungs
from haq.problem.config import EnvConfig
from haq.problem.fidelity import Scored
from haq.problem.problem import SearchProblem
from haq.problem.reward import accuracy_term, cost_term
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.rungs import RUNG, centre_at_accuracy, centre_rung
from haq.transfer import run as transfer_run
from haq.transfer.config import TransferConfig
from haq.transfer.experience import Repriced, reprice
from haq.transfer.run import run_transfer, transfer_env
from haq.transfer.source import load_source
from haq.transfer.start import PREDICTED, PREDICTED_FRACTION, STARTED_FROM, PredictedStart, choose_zero_shot, predicted_start

CHEAP = EvalConfig(kind="cheap", val_samples=120)


@pytest.mark.parametrize("seed", range(5))
def test_the_fit_is_the_least_squares_non_increasing_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, size=40).astype(float)  # ties: points sharing an x enter as their mean
    y = -0.3 * x + rng.normal(0.0, 1.5, size=40)
    keys, fitted = antitonic_fit(x.tolist(), y.tolist())
    assert list(keys) == sorted(set(x.tolist()))
    assert all(a >= b - 1e-12 for a, b in zip(fitted, fitted[1:]))
    counts = np.array([np.sum(x == k) for k in keys], dtype=float)
    means = np.array([y[x == k].mean() for k in keys])
    expected = isotonic_regression(means, weights=counts, increasing=False).x
    assert np.allclose(fitted, expected, atol=1e-10)
    assert sum(c * f for c, f in zip(counts, fitted)) == pytest.approx(float(y.sum()))  # pooling keeps the total


def test_a_non_increasing_sequence_is_its_own_fit_and_bad_input_is_refused() -> None:
    assert antitonic_fit([3.0, 1.0, 2.0], [0.1, 0.5, 0.2]) == ((1.0, 2.0, 3.0), (0.5, 0.2, 0.1))
    with pytest.raises(ConfigError, match="as many x as y"):
        antitonic_fit([1.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="finite"):
        antitonic_fit([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ConfigError, match="at least one point"):
        AccuracyFit.fit([], [])


def test_the_fit_interpolates_keeps_the_best_known_below_and_predicts_nothing_above() -> None:
    fit = AccuracyFit.fit([1.0, 3.0, 2.0, 3.0], [0.0, -1.0, -0.5, -2.0])
    assert fit.errors == (1.0, 2.0, 3.0) and fit.values == (0.0, -0.5, -1.5)
    assert fit.predict(1.5) == pytest.approx(-0.25)
    assert fit.predict(2.5) == pytest.approx(-1.0)
    assert fit.predict(0.1) == 0.0  # more accurate than anything evaluated: predicted no better than the best
    assert fit.predict(3.0) == -1.5 and fit.predict(3.0001) is None


def _record(problem: SearchProblem, pairs: tuple[tuple[int, int], ...], clean_acc: float, episode: int) -> EpisodeRecord:
    metrics = PolicyMetrics(clean_acc, None, 1.0, None, 1)
    return EpisodeRecord(episode, dict(zip(problem.layer_names, pairs)), metrics, 0.0)


def _cost(problem: SearchProblem, pairs: tuple[tuple[int, int], ...]) -> float:
    latency, energy, size = PolicyCosts(problem.workload.layers, problem.table, problem.table).costs(problem.policy(pairs))
    return cost_term(PolicyMetrics(0.0, None, latency, energy, size), problem.budget, problem.config.reward)


@pytest.fixture(scope="module")
def edge(cache_dir: Path) -> SearchProblem:
    return make_problem(EnvConfig(evaluation=CHEAP, table="bismo-edge"), cache_dir=cache_dir)


def test_where_no_evaluated_policy_lost_accuracy_the_cheapest_allocation_is_predicted_best(edge: SearchProblem) -> None:
    reference = edge.evaluator.reference.clean_acc
    lowest = tuple(min(c.pairs) for c in edge.budget_model.layers)  # the least accurate policy there is
    ladder = sensitivity_rungs(edge.budget_model, edge.sensitivity, budget_ladder(edge.budget_model, 4, 0.25))
    records = [_record(edge, lowest, reference, 0), *(_record(edge, p, reference, i + 1) for i, (_, p) in enumerate(ladder))]
    start = predicted_start(edge, records, 4, 0.25)
    assert start is not None and start.points >= 2
    assert start.predicted == pytest.approx(-_cost(edge, start.pairs))
    assert start.predicted == pytest.approx(max(-_cost(edge, p) for _, p in ladder))
    assert start.fraction < 1.0


def test_no_allocation_is_predicted_beyond_the_evaluated_errors(edge: SearchProblem) -> None:
    reference = edge.evaluator.reference.clean_acc
    ladder = sensitivity_rungs(edge.budget_model, edge.sensitivity, budget_ladder(edge.budget_model, 4, 0.25))
    full = ladder[0][1]  # the full budget's: the least estimated error of the ladder
    records = [_record(edge, full, reference - 0.05, 0)]
    start = predicted_start(edge, records, 4, 0.25)
    assert start is not None and start.pairs == full and start.fraction == 1.0
    term = accuracy_term(records[0].metrics, edge.evaluator.reference, edge.config.reward)
    assert term == pytest.approx(-0.5) and start.predicted == pytest.approx(term - _cost(edge, full))
    assert predicted_start(edge, [], 4, 0.25) is None


@pytest.mark.parametrize("table", ["bismo-edge", "bismo-cloud"])
def test_the_zero_shot_is_the_predicted_allocation_only_when_it_beats_the_best_reused(
    rung_source: Path, tmp_path: Path, cache_dir: Path, table: str
) -> None:
    cfg = TransferConfig(source=str(rung_source), table=table, episodes=0)
    target = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    records = RunDir(rung_source).read_episodes()
    source = load_source(rung_source).config
    rung = centre_rung(records, source.agent, source.env, "source")
    assert rung is not None and sum(RUNG in r.extra for r in records) == 2
    centred, _ = centre_at_accuracy(target, dict(rung.policy))
    best = max(reprice(records, centred), key=lambda r: r.scored.reward)
    start = predicted_start(centred, records, 2, source.agent.prior_floor)
    assert start is not None
    zero = run_transfer(cfg, target, tmp_path / "predicted").records[0]
    predicted = start.predicted > best.scored.reward
    assert zero.extra[STARTED_FROM] == ("predicted" if predicted else "reused")
    assert zero.extra[PREDICTED] == start.predicted and zero.extra[PREDICTED_FRACTION] == start.fraction
    assert zero.pairs(target.layer_names) == (start.pairs if predicted else best.pairs)
    if predicted:
        assert zero.reward != best.scored.reward or start.pairs == best.pairs
    else:
        assert zero.reward == pytest.approx(best.scored.reward)
    reused = TransferConfig(source=str(rung_source), table=table, episodes=0, zero_shot="best_reused")
    plain = run_transfer(reused, make_problem(transfer_env(reused), cache_dir=cache_dir), tmp_path / "reused").records[0]
    assert plain.pairs(target.layer_names) == best.pairs and STARTED_FROM in plain.extra and PREDICTED not in plain.extra


def test_a_prediction_above_the_best_reused_is_the_zero_shot_policy(
    rung_source: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other branch, which the short source above does not reach: the prediction is replaced
    by one that must win (an allocation the source never evaluated), and the actor asks for it."""
    cfg = TransferConfig(source=str(rung_source), table="bismo-edge", episodes=1)
    target = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    records = RunDir(rung_source).read_episodes()
    evaluated = {r.pairs(target.layer_names) for r in records}
    ladder = sensitivity_rungs(target.budget_model, target.sensitivity, budget_ladder(target.budget_model, 5, 0.3))
    pairs = next(p for _, p in reversed(ladder) if p not in evaluated)
    asked: list[tuple[int, float]] = []

    def winning(problem: SearchProblem, logged: object, rungs: int, floor: float) -> PredictedStart:
        asked.append((rungs, floor))
        return PredictedStart(pairs, 0.3, 10.0, 3)

    monkeypatch.setattr(transfer_run, "predicted_start", winning)
    result = run_transfer(cfg, target, tmp_path / "t")
    zero = result.records[0]
    assert asked and asked[0] == (2, load_source(rung_source).config.agent.prior_floor)
    assert zero.extra[STARTED_FROM] == "predicted" and zero.extra[PREDICTED] == 10.0 and zero.extra[PREDICTED_FRACTION] == 0.3
    assert zero.pairs(target.layer_names) == pairs and zero.reward < 10.0  # evaluated, not the prediction
    assert len(result.records) == 2


def test_the_zero_shot_is_the_prediction_only_above_the_best_reused_reward() -> None:
    metrics = PolicyMetrics(0.9, None, 1.0, None, 1)
    best = Repriced(((8, 8),), Scored(metrics, -0.3, cached=True), 7)
    above, below = PredictedStart(((4, 4),), 0.5, -0.2, 3), PredictedStart(((4, 4),), 0.5, -0.3, 3)
    chosen = choose_zero_shot(above, best)
    assert chosen is not None and chosen.pairs == ((4, 4),)
    assert chosen.extra == {STARTED_FROM: "predicted", PREDICTED: -0.2, PREDICTED_FRACTION: 0.5}
    tied = choose_zero_shot(below, best)  # a tie keeps the policy whose reward is known
    assert tied is not None and tied.pairs == ((8, 8),) and tied.extra[STARTED_FROM] == "reused" and PREDICTED in tied.extra
    alone = choose_zero_shot(None, best)
    assert alone is not None and alone.extra == {STARTED_FROM: "reused"} and "source episode 7" in alone.description
    only = choose_zero_shot(above, None)
    assert only is not None and only.pairs == ((4, 4),)
    assert choose_zero_shot(None, None) is None


def test_a_transfer_written_before_the_choice_existed_resumes_as_the_best_reused_start(
    rung_source: Path, tmp_path: Path, cache_dir: Path
) -> None:
    cfg = TransferConfig(source=str(rung_source), table="bismo-edge", episodes=1, zero_shot="best_reused")
    problem = make_problem(transfer_env(cfg), cache_dir=cache_dir)
    out = tmp_path / "old"
    run_transfer(cfg, problem, out)
    path = out / "config.json"
    doc = json.loads(path.read_text())
    del doc["transfer"]["config"]["zero_shot"]  # as a transfer run written before the field
    path.write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="zero_shot='best_reused', this run has zero_shot='predicted'"):
        run_transfer(dataclasses.replace(cfg, zero_shot="predicted", episodes=2), problem, out, resume=True)
    resumed = run_transfer(dataclasses.replace(cfg, episodes=2), problem, out, resume=True)
    assert [r.episode for r in resumed.records] == [0, 1, 2]
