"""The re-judging of a search-quality benchmark: the workload's own evaluator seed reproduces the
benchmark's figures, more seeds average the chosen policy's report, and a rerun resumes."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import bench_module

from haq.evaluation.held_out import Images, held_out_evaluator
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.select import Pick
from haq.runs.final_pick import FinalPick
from haq.runs.rundir import EpisodeRecord

ARGS = ["--full", "--models", "digits_cnn", "--methods", "uniform", "random", "--seeds", "0", "--evaluations", "4"]


@pytest.fixture(scope="module")
def modules() -> tuple[ModuleType, ModuleType]:
    return bench_module("search_quality"), bench_module("rejudge")


@pytest.fixture(scope="module")
def benchmark(modules: tuple[ModuleType, ModuleType], tmp_path_factory: pytest.TempPathFactory) -> Path:
    sq, _ = modules
    out = tmp_path_factory.mktemp("sq")
    assert sq.main([*ARGS, "--out", str(out)]) == 0
    return out


def rows(path: Path) -> list[dict[str, object]]:
    return json.loads((path / "results.json").read_text())


def test_the_own_seed_alone_gives_the_benchmark_s_figures(
    modules: tuple[ModuleType, ModuleType], benchmark: Path, tmp_path: Path
) -> None:
    _, rj = modules
    assert rj.main([str(benchmark), "--evaluator-seeds", "1", "--out", str(tmp_path / "one")]) == 0
    assert rows(tmp_path / "one") == rows(benchmark)


def test_more_seeds_report_the_mean_of_the_chosen_policy_s_rewards(
    modules: tuple[ModuleType, ModuleType], benchmark: Path, tmp_path: Path
) -> None:
    sq, rj = modules
    assert rj.main([str(benchmark), "--evaluator-seeds", "3", "--methods", "uniform", "--out", str(tmp_path / "three")]) == 0
    [row] = rows(tmp_path / "three")
    [before] = [r for r in rows(benchmark) if r["method"] == "uniform"]
    judged = ("test_reward", "test_clean", "test_robust", "crossfit_reward")
    assert {k: v for k, v in row.items() if k not in judged} == {k: v for k, v in before.items() if k not in judged}
    # independently: uniform's one policy (its only candidate) on the second half of the test split
    bench = sq.Workbench(sq.Setting("digits_cnn", "full", 4, (0,)), 1)
    problem = bench.problem(bench.env)
    n = len(bench.workload.data.test)
    policy = sq.QuantPolicy.from_pairs((name, tuple(p)) for name, p in before["best_policy"].items())
    rewards, clean = [], []
    for seed in (bench.workload.config.seed, 101, 102):
        wl = dataclasses.replace(bench.workload, config=dataclasses.replace(bench.workload.config, seed=seed))
        ev = held_out_evaluator(wl, bench.table, bench.env.evaluation, "full", Images("test", n // 2, n))
        metrics = ev.evaluate(policy)
        rewards.append(problem.reward(metrics, ev.reference))
        clean.append(metrics.clean_acc)
    assert rewards[0] == pytest.approx(before["test_reward"], abs=1e-9)
    assert len(set(rewards)) > 1  # the seeds do move the full evaluator's reward
    assert row["test_reward"] == pytest.approx(statistics.mean(rewards), abs=1e-9)
    assert row["test_clean"] == pytest.approx(statistics.mean(clean), abs=1e-9)


def test_a_rerun_keeps_the_rows_made_and_a_missing_run_is_one_line(
    modules: tuple[ModuleType, ModuleType], benchmark: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sq, rj = modules
    out = tmp_path / "judged"
    assert rj.main([str(benchmark), "--evaluator-seeds", "1", "--methods", "uniform", "--out", str(out)]) == 0
    capsys.readouterr()
    assert rj.main([str(benchmark), "--evaluator-seeds", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "uniform seed 0" not in err and "random seed 0" in err  # only the run not yet judged
    assert [r["method"] for r in rows(out)] == ["uniform", "random"]
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "results.json").write_text((benchmark / "results.json").read_text())
    with pytest.raises(SystemExit) as missing:
        rj.main([str(lost), "--out", str(tmp_path / "none")])
    assert "no run directory" in str(missing.value) and "\n" not in str(missing.value)


def test_a_multi_fidelity_run_is_judged_after_its_screen_is_replayed(
    modules: tuple[ModuleType, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The own seed reproduces a multi-fidelity row, its count of full evaluations included: the
    promotion before the pick spends only what the run left of its allowance (a fresh screen
    would spend all of it again and count only that)."""
    sq, rj = modules
    bench = tmp_path / "multi"
    args = ["--full", "--models", "digits_mlp", "--methods", "rl-multi", "--seeds", "0", "--evaluations", "7"]
    assert sq.main([*args, "--out", str(bench)]) == 0
    [row] = rows(bench)
    assert row["full_evaluations"] < row["evaluations"]  # some episodes were screened out
    assert rj.main([str(bench), "--evaluator-seeds", "1", "--out", str(tmp_path / "one")]) == 0
    assert rows(tmp_path / "one") == [row]
    capsys.readouterr()
    assert rj.main([str(bench), "--pick-defer", "2", "--out", str(tmp_path / "deferred")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "chose episode" in line]
    assert len(said) == 1 and "times" in said[0]


def test_the_log_says_how_the_choice_stood_to_the_most_proposed_policy(modules: tuple[ModuleType, ModuleType]) -> None:
    _, rj = modules
    metrics = PolicyMetrics(0.9, None, 1.0, None, 64)
    a, b = {"fc": (8, 8)}, {"fc": (4, 4)}
    records = [EpisodeRecord(i, p, metrics, 0.0) for i, p in enumerate([a, b, b, a, b])]
    candidates = (records[0], records[1])

    def final(index: int, settled: int | None) -> FinalPick:
        policy = candidates[index].quant_policy()
        return FinalPick(Pick(index, policy, {0: 1.30, 1: 1.10}, metrics, 1.0, "s", "t", (), settled), candidates)

    assert rj.choice(final(1, 1), records) == "chose episode 1 (proposed 3 times): the run's most proposed policy"
    assert rj.choice(final(0, 1), records) == (
        "chose episode 0 (proposed 2 times) over the most proposed (episode 1), +0.200 ahead on the choosing images"
    )
    assert rj.choice(final(0, None), records) == "chose episode 0 (proposed 2 times)"
