"""The search-quality benchmark runs for an hour or more: a kill must cost at most the run it cut
off, and a resumed benchmark must give the table it would have given in one go."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import bench_module

ARGS = ["--quick", "--models", "digits_cnn", "--methods", "uniform", "random", "--seeds", "0", "--evaluations", "4"]


@pytest.fixture(scope="module")
def sq() -> ModuleType:
    return bench_module("search_quality")


def test_a_killed_benchmark_resumes_keeping_its_finished_runs(
    sq: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sq"
    assert sq.main([*ARGS, "--out", str(out)]) == 0
    first = json.loads((out / sq.RESULTS).read_text())
    assert [r["method"] for r in first] == ["uniform", "random"]
    capsys.readouterr()
    # killed after random search's run directory was written, before its result was
    (out / sq.RESULTS).write_text(json.dumps(first[:1]))
    assert sq.run_dir(out, "digits_cnn", "random", 0).is_dir()
    assert sq.main([*ARGS, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "uniform seed 0: kept from results.json" in err and "random seed 0 was cut off; starting it again" in err
    again = json.loads((out / sq.RESULTS).read_text())
    assert again[0] == first[0]  # kept as it was, not run again
    timeless = [{k: v for k, v in r.items() if k != "seconds"} for r in (first[1], again[1])]
    assert timeless[0] == timeless[1]  # the same seed gives the same run


def test_an_used_out_is_refused_unless_resumed_with_the_same_arguments(
    sq: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sq"
    fast = [*ARGS[:4], "uniform", *ARGS[6:], "--out", str(out)]
    assert sq.main(fast) == 0
    with pytest.raises(SystemExit) as refused:
        sq.main(fast)
    assert refused.value.code == 2 and "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as other:
        sq.main([*fast[:-2], "--workers", "2", "--out", str(out), "--resume"])
    assert "was started with other workers" in str(other.value) and "\n" not in str(other.value)
    with pytest.raises(SystemExit) as foreign:
        sq.main([*ARGS, "--out", str(tmp_path / "empty"), "--resume"])
    assert "cannot read the arguments" in str(foreign.value)


def test_a_variant_is_judged_against_the_default_on_the_seeds_both_ran(sq: ModuleType) -> None:
    def run(method: str, seed: int, test: float) -> object:
        return sq.RunResult("digits_cnn", "full", 300, method, seed, 4, 1.0, test, {}, (test,), test, 0.9, None, None)

    rows = [run("rl", s, 1.0 + 0.1 * s) for s in range(4)] + [run("rl-wide", s, 1.05 + 0.1 * s) for s in (0, 1, 2)]
    rows.append(run("rl-wide", 9, 5.0))  # no default run of seed 9: not compared
    (line,) = sq.variant_verdicts(rows)
    assert "rl-wide minus rl, median final test reward: +0.0500" in line and "better in 3, worse in 0 of 3" in line
    assert sq.variant_verdicts([r for r in rows if r.method == "rl"]) == []


def test_a_seeded_agent_counts_against_its_seed_only_above_the_evaluator_noise(sq: ModuleType) -> None:
    def run(method: str, seed: int, test: float, evaluator: str = "cheap") -> object:
        return sq.RunResult("resnet20", evaluator, 300, method, seed, 4, 1.0, test, {}, (test,), test, 0.98, None, None)

    cheap = sq.Setting("resnet20", "cheap", 4, (0, 1, 2))
    ilp = run("ilp", 0, -0.100)
    noise = sq.seed_noise(cheap, [ilp], float("nan"))  # the binomial std at 98 % on 300 images, HAQ's weight
    assert noise == pytest.approx(0.1 * 100 * (0.98 * 0.02 / 300) ** 0.5)
    assert sq.seed_noise(cheap, [ilp], 0.5) == 0.5  # a measured noise wins
    level = [ilp, *(run("rl", s, -0.100 + 0.01 * s) for s in range(3))]
    (line,) = sq.seeded_verdicts(cheap, level, noise)
    assert "rl minus ilp, median final test reward +0.0100" in line and "does not count" in line
    assert "with an action prior it is an objective agent" in line  # the default on a clean-accuracy reward
    ahead = [ilp, *(run("rl", s, 0.0) for s in range(3))]
    assert "above it: counts" in sq.seeded_verdicts(cheap, ahead, noise)[0]
    robust = sq.Setting("digits_cnn", "full", 4, (0, 1, 2))  # a robust reward: the default agent ends as an objective agent
    (portfolio,) = sq.seeded_verdicts(robust, [run(r.method, r.seed, r.test_reward, "full") for r in ahead], 0.2)
    assert "rl minus ilp, median final test reward +0.1000" in portfolio and "objective agent" in portfolio
    assert "does not count" in portfolio
    alone = [ilp, *(run(sq.ALONE, s, -0.2 + 0.01 * s) for s in range(3))]
    (vs_ilp,) = sq.alone_against_baselines(alone)
    assert vs_ilp.startswith(f"\n{sq.ALONE} minus ilp, median final test reward: -0.0900")


def test_repaired_agents_alone_differ_from_theirs_only_by_the_projection(sq: ModuleType) -> None:
    env = sq.setting_env(sq.MODES["full"][1])
    assert set(sq.REPAIRED) == {"rl-alone-shift", "rl-alone-ceiling", "rl-alone-sens-shift", "rl-alone-sens-ceiling"}
    for name, (agent, rule) in sq.REPAIRED.items():
        repaired, alone = sq.method_env(env, name), sq.method_env(env, agent)
        assert repaired.projection == rule != alone.projection == "stepwise"
        assert dataclasses.replace(repaired, projection=alone.projection) == alone
        assert sq.method_search(repaired, name, 10, 0).agent == sq.method_search(alone, agent, 10, 0).agent


def test_the_wide_agent_alone_is_the_ceiling_one_with_only_the_wider_entropy(sq: ModuleType) -> None:
    env = sq.setting_env(sq.MODES["full"][1])
    ceiling = sq.ALONE_CEILING
    assert ceiling in sq.REPAIRED and sq.ALONE_WIDE == "rl-alone-ceiling-wide"
    assert sq.method_env(env, sq.ALONE_WIDE) == sq.method_env(env, ceiling)
    wide, narrow = sq.method_search(env, sq.ALONE_WIDE, 10, 0).agent, sq.method_search(env, ceiling, 10, 0).agent
    assert wide.target_entropy == sq.WIDE_ENTROPY != narrow.target_entropy
    assert dataclasses.replace(wide, target_entropy=narrow.target_entropy) == narrow
    assert sq.ALONE_WIDE in sq.ALONES and sq.ALONE_WIDE in sq.VARIANTS


@pytest.mark.parametrize(
    ("variants", "suffix", "field", "value"),
    [("CREDITED", "credit", "cost_credit", True), ("WHOLE", "policy", "decision", "policy")],
)
def test_a_changed_agent_alone_differs_from_its_own_only_by_that_change(
    sq: ModuleType, variants: str, suffix: str, field: str, value: object
) -> None:
    env = sq.setting_env(sq.MODES["full"][1])
    changed_by = getattr(sq, variants)
    assert set(changed_by) == {f"rl-alone-{suffix}", f"rl-alone-ceiling-{suffix}"}
    for name, alone in changed_by.items():
        assert sq.method_env(env, name) == sq.method_env(env, alone)
        changed, theirs = sq.method_search(env, name, 10, 0).agent, sq.method_search(env, alone, 10, 0).agent
        assert getattr(changed, field) == value != getattr(theirs, field)
        assert dataclasses.replace(changed, **{field: getattr(theirs, field)}) == theirs
        assert name in sq.ALONES and name in sq.VARIANTS


def test_a_repaired_agent_alone_is_also_judged_against_random_search_under_its_repair(sq: ModuleType) -> None:
    def run(method: str, seed: int, test: float) -> object:
        return sq.RunResult("digits_cnn", "full", 300, method, seed, 4, 1.0, test, {}, (test,), test, 0.9, None, None)

    env = sq.setting_env(sq.MODES["full"][1])
    assert sq.method_env(env, "random-ceiling") == dataclasses.replace(env, projection="ceiling")
    rows = [run("rl-alone-ceiling", s, 1.0 + 0.1 * s) for s in range(3)] + [run("random-ceiling", s, 0.9) for s in range(3)]
    rows += [run("random-shift", s, 5.0) for s in range(3)]  # another repair's random: not its comparator
    (line,) = sq.alone_against_baselines(rows)
    assert line.startswith("\nrl-alone-ceiling minus random-ceiling, median final test reward: +0.2000")
    assert "better in 3, worse in 0 of 3" in line
    stepwise = [run(sq.ALONE, s, 1.0) for s in range(3)] + rows[3:]
    assert sq.alone_against_baselines(stepwise) == []  # the stepwise agent alone has no repaired comparator


def test_random_search_under_a_repair_runs_as_the_random_baseline(
    sq: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*ARGS[:4], "random", "random-ceiling", *ARGS[6:], "--out", str(tmp_path / "sq")]
    assert sq.main(args) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "sq" / sq.RESULTS).read_text())}
    config = json.loads((sq.run_dir(tmp_path / "sq", "digits_cnn", "random-ceiling", 0) / "config.json").read_text())
    assert config["config"]["baseline"]["method"] == "random" and config["config"]["env"]["projection"] == "ceiling"
    assert rows["random-ceiling"]["evaluations"] == rows["random"]["evaluations"] == 4


def test_the_portfolio_is_the_default_agent_as_a_portfolio_judged_also_as_seeded(sq: ModuleType) -> None:
    def run(method: str, seed: int, test: float) -> object:
        return sq.RunResult("digits_cnn", "full", 300, method, seed, 4, 1.0, test, {}, (test,), test, 0.9, None, None)

    env = sq.setting_env(sq.MODES["full"][1])
    assert sq.method_env(env, sq.PORTFOLIO) == sq.method_env(env, "rl") == env
    portfolio, default = sq.method_search(env, sq.PORTFOLIO, 10, 0).agent, sq.method_search(env, "rl", 10, 0).agent
    assert portfolio.decision == "portfolio" and dataclasses.replace(portfolio, decision=default.decision) == default
    robust = sq.Setting("digits_cnn", "full", 4, (0, 1, 2))
    rows = [run("ilp", 0, 1.0), *(run(sq.PORTFOLIO, s, 1.1 + 0.01 * s) for s in range(3))]
    (line,) = sq.alone_against_baselines(rows)
    assert line.startswith(f"\n{sq.PORTFOLIO} minus ilp, median final test reward: +0.1100")
    (seeded,) = sq.seeded_verdicts(robust, rows, 0.132)
    assert f"{sq.PORTFOLIO} minus ilp, median final test reward +0.1100" in seeded and "does not count" in seeded


def test_the_agents_alone_decide_one_layer_per_step_on_every_workload(sq: ModuleType) -> None:
    """Without an action prior the default decision is a portfolio; the agents alone stay what
    their rows since v0.1 measured: SAC deciding one layer per step."""
    for setting in sq.MODES["full"]:
        for name in (sq.ALONE, sq.ALONE_SENS, *sq.REPAIRED, sq.LAYER):
            env = sq.method_env(sq.setting_env(setting), name)
            agent = sq.method_search(env, name, 300, 0).agent
            assert [a.decision for a, _ in agent.phases(300, env.has_action_prior)] == ["layer"], (setting, name)


def test_rows_name_their_fine_tune_rate_and_tables_keep_rates_apart(sq: ModuleType, tmp_path: Path) -> None:
    row = {
        "model": "digits_mlp",
        "evaluator": "full",
        "val_samples": 300,
        "method": "rl",
        "seed": 0,
        "evaluations": 4,
        "seconds": 1.0,
        "best_reward": 1.0,
        "best_policy": {"head": [4, 4]},
        "test_reward": 0.5,
        "test_clean": 0.9,
        "test_robust": 0.5,
        "full_evaluations": None,
        "rewards": [1.0],
    }
    old = sq.from_json(row, "old")  # written before rows named their rate: the default they ran under
    assert old.finetune_lr == sq.HISTORIC_LR == sq.EvalConfig().finetune_lr
    new = dataclasses.replace(old, finetune_lr=1e-4, test_reward=0.9)
    assert sq.from_json(sq.to_json(new), "new") == new and sq.run_key(new) != sq.run_key(old)
    for name, r in (("a", old), ("b", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / sq.RESULTS).write_text(json.dumps([sq.to_json(r)]))
    tables = sq.merged([tmp_path / "a", tmp_path / "b"])
    titles = [line for line in tables.splitlines() if line.startswith("### digits_mlp")]
    assert len(titles) == 2 and "lr" not in titles[0] and "DQ fine-tune lr 0.0001" in titles[1]
