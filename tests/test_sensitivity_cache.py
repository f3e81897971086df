"""Sensitivity estimates kept between runs: a file holds exactly the estimate (and a broken one is
one line), the key changes with everything that changes the figures and nothing else, a kept
estimate is reused instead of measured (by baselines, the objective agent and resumed runs) and
equals a fresh one, and a cache that cannot be read or written costs time, never the run."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from search_fakes import AnalyticTable

from haq.baselines import BaselineConfig, run_baseline
from haq.cli import main as haq_main
from haq.core.errors import DataError, InternalError
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import SENSITIVITY_CACHE, make_problem
from haq.problem import reward_sensitivity as module
from haq.problem.config import BudgetConfig, EnvConfig, RewardConfig
from haq.problem.reward_sensitivity import reward_sensitivity, reward_sensitivity_key
from haq.problem.sensitivity import Sensitivity, SensitivityConfig
from haq.runs.sensitivity_file import SensitivityCache, read_sensitivity, write_sensitivity
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.workload import Workload

SAMPLES = SensitivityConfig(samples=40, estimator="measured")
ROBUST = EnvConfig(evaluation=EvalConfig(kind="full", val_samples=60, robust_samples=20))


@pytest.fixture(scope="module")
def measured(digits_workload: Workload) -> Sensitivity:
    return reward_sensitivity(ROBUST, digits_workload, SAMPLES)


def test_a_file_holds_exactly_the_estimate(measured: Sensitivity, tmp_path: Path) -> None:
    write_sensitivity(tmp_path, measured)
    back = read_sensitivity(tmp_path / "sensitivity.json")
    assert back == measured and list(back.layers) == list(measured.layers)  # every float, in layer order
    assert any(v < 0 for ls in back.layers.values() for v in ls.activation.values())  # negative entries survive


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d.update(version=2), "version 2, this haq reads version 1"),
        (lambda d: d.pop("samples"), "exactly the fields estimator, samples, layers"),
        (lambda d: d.update(estimator="auto"), "estimator 'auto' is not one of fisher, measured"),
        (lambda d: d.update(samples=True), "samples must be a positive integer"),
        (lambda d: d.update(layers={}), "layers must be a non-empty object"),
        (lambda d: next(iter(d["layers"].values()))["weight"].pop("3"), "needs one error per width 1, 2, 3"),
        (lambda d: next(iter(d["layers"].values()))["activation"].update({"2": "0.1"}), "at 2 bits is '0.1', not a finite"),
        (lambda d: next(iter(d["layers"].values())).update(bias={}), "needs exactly the fields weight, activation"),
    ],
)
def test_a_broken_file_is_one_line_naming_it(measured: Sensitivity, tmp_path: Path, change: object, said: str) -> None:
    write_sensitivity(tmp_path, measured)
    path = tmp_path / "sensitivity.json"
    doc = json.loads(path.read_text())
    change(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as err:
        read_sensitivity(path)
    assert said in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_non_finite_error_is_refused(measured: Sensitivity, tmp_path: Path) -> None:
    write_sensitivity(tmp_path, measured)
    path = tmp_path / "sensitivity.json"
    doc = json.loads(path.read_text())
    next(iter(doc["layers"].values()))["weight"]["4"] = float("nan")
    path.write_text(json.dumps(doc))  # Python writes NaN, which JSON has no word for
    with pytest.raises(DataError) as err:
        read_sensitivity(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_key_changes_with_what_changes_the_figures(digits_workload: Workload) -> None:
    w = digits_workload
    key = reward_sensitivity_key(ROBUST, w, SAMPLES)
    assert len(key) == 32 and int(key, 16) >= 0
    twin = dataclasses.replace(w, model=copy.deepcopy(w.model))
    assert reward_sensitivity_key(ROBUST, twin, SAMPLES) == key  # the same weights in another object
    with torch.no_grad():
        next(twin.model.parameters()).view(-1)[0] += 1e-6
    assert reward_sensitivity_key(ROBUST, twin, SAMPLES) != key
    assert reward_sensitivity_key(ROBUST, w, dataclasses.replace(SAMPLES, samples=41)) != key  # other images
    assert reward_sensitivity_key(ROBUST, w, dataclasses.replace(SAMPLES, estimator="auto")) != key
    heavier = dataclasses.replace(ROBUST, reward=RewardConfig(robust_weight=0.1))
    assert reward_sensitivity_key(heavier, w, SAMPLES) != key
    stronger = dataclasses.replace(ROBUST, evaluation=dataclasses.replace(ROBUST.evaluation, attack_eps=0.2))
    assert reward_sensitivity_key(stronger, w, SAMPLES) != key
    reseeded = dataclasses.replace(w, config=dataclasses.replace(w.config, seed=1))  # the attack's seed
    assert reward_sensitivity_key(ROBUST, reseeded, SAMPLES) != key
    # what the estimate does not read: the evaluator's images and fine-tune
    other_eval = dataclasses.replace(ROBUST, evaluation=dataclasses.replace(ROBUST.evaluation, val_samples=90))
    assert reward_sensitivity_key(other_eval, w, SAMPLES) == key


def test_a_kept_estimate_is_reused_and_equals_a_fresh_one(
    digits_workload: Workload, measured: Sensitivity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SensitivityCache(tmp_path / "cache")
    said: list[str] = []
    first = reward_sensitivity(ROBUST, digits_workload, SAMPLES, said.append, store=store)
    assert first == measured and any(line.startswith("measured sensitivity: layer") for line in said)
    [kept] = list((tmp_path / "cache").glob("*.json"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("estimated again")

    monkeypatch.setattr(module, "measure_sensitivity", refuse)
    monkeypatch.setattr(module, "float_robust_accuracy", refuse)
    said.clear()
    again = reward_sensitivity(ROBUST, digits_workload, SAMPLES, said.append, store=store)
    assert again == measured
    assert said == [f"sensitivity: reused the measured estimate of 4 layers made for this model and reward ({kept.stem})"]


def test_a_reused_fisher_estimate_is_as_quiet_as_a_fresh_one(digits_workload: Workload, tmp_path: Path) -> None:
    """A Fisher estimate takes seconds and is never announced, so neither is its reuse: a command's
    output does not depend on what the cache holds."""
    store = SensitivityCache(tmp_path)
    said: list[str] = []
    clean = SensitivityConfig(samples=40)
    first = reward_sensitivity(EnvConfig(), digits_workload, clean, said.append, store=store)
    again = reward_sensitivity(EnvConfig(), digits_workload, clean, said.append, store=store)
    assert first.estimator == "fisher" and again == first and said == [] and len(list(tmp_path.glob("*.json"))) == 1


def test_an_unreadable_entry_is_estimated_again_and_replaced(
    digits_workload: Workload, measured: Sensitivity, tmp_path: Path
) -> None:
    said: list[str] = []
    store = SensitivityCache(tmp_path, said.append)
    key = reward_sensitivity_key(ROBUST, digits_workload, SAMPLES)
    (tmp_path / f"{key}.json").write_text('{"version": 1, "estimator": "measured"')
    assert reward_sensitivity(ROBUST, digits_workload, SAMPLES, store=store) == measured
    assert (
        len(said) == 1 and said[0].startswith("warning: ignoring the cached sensitivity (") and "estimating it again" in said[0]
    )
    assert read_sensitivity(tmp_path / f"{key}.json") == measured


def test_a_cache_that_cannot_be_written_loses_the_entry_not_the_run(
    digits_workload: Workload, measured: Sensitivity, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    said: list[str] = []
    store = SensitivityCache(tmp_path / "file" / "sensitivity", said.append)
    assert reward_sensitivity(ROBUST, digits_workload, SAMPLES, store=store) == measured
    assert len(said) == 1 and said[0].startswith("warning: could not keep the sensitivity estimate in ")


def test_a_key_is_never_a_path(tmp_path: Path) -> None:
    with pytest.raises(InternalError, match="not a 32-digit hex digest"):
        SensitivityCache(tmp_path).path("../../etc/passwd")


def test_a_second_baseline_on_the_same_model_reuses_the_first_s_estimate(cache_dir: Path, tmp_path: Path) -> None:
    shutil.rmtree(cache_dir / SENSITIVITY_CACHE, ignore_errors=True)  # what earlier tests kept
    env = dataclasses.replace(ROBUST, budget=BudgetConfig(ratio=0.4))
    cfg = BaselineConfig(method="ilp", evaluations=1, sensitivity=SAMPLES)
    lines: list[list[str]] = [[], []]
    for i, method in enumerate(("ilp", "greedy")):
        problem = make_problem(env, cache_dir=cache_dir, table=AnalyticTable())
        run_baseline(dataclasses.replace(cfg, method=method), problem, tmp_path / method, log=lines[i].append)
    assert any(line.startswith("measured sensitivity: layer") for line in lines[0])
    assert not any(line.startswith("measured sensitivity") for line in lines[1])
    assert any(line.startswith("sensitivity: reused the measured estimate") for line in lines[1])
    assert (tmp_path / "ilp" / "sensitivity.json").read_text() == (tmp_path / "greedy" / "sensitivity.json").read_text()


def test_a_resumed_objective_search_does_not_measure_again(cache_dir: Path, tmp_path: Path) -> None:
    """The objective agent estimates its sensitivity when it starts (a robust reward has no
    prior): a resume, or a later member of a portfolio, reads it back."""
    shutil.rmtree(cache_dir / SENSITIVITY_CACHE, ignore_errors=True)
    problem = make_problem(
        dataclasses.replace(ROBUST, budget=BudgetConfig(ratio=0.4)), cache_dir=cache_dir, table=AnalyticTable()
    )
    agent = AgentConfig(algo="sac", decision="objective", warmup_episodes=2, hidden=(16,))
    cfg = SearchConfig(env=problem.config, agent=agent, episodes=2, seed=0)
    first: list[str] = []
    run_search(cfg, problem, tmp_path / "run", log=first.append)
    assert any(line.startswith("measured sensitivity: layer") for line in first)
    resumed: list[str] = []
    run_search(dataclasses.replace(cfg, episodes=3), problem, tmp_path / "run", resume=True, log=resumed.append)
    assert not any(line.startswith("measured sensitivity") for line in resumed)
    assert any(line.startswith("sensitivity: reused the measured estimate") for line in resumed)


def test_the_baseline_command_says_it_reused_the_estimate(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(cache_dir / SENSITIVITY_CACHE, ignore_errors=True)
    argv = ["baseline", "--method", "greedy", "--evaluator", "cheap", "--evaluations", "1", "--sensitivity-samples", "40"]
    assert haq_main([*argv, "--sensitivity", "measured", "--out", str(tmp_path / "a")]) == 0
    assert "reused" not in capsys.readouterr().err
    assert haq_main([*argv, "--sensitivity", "measured", "--out", str(tmp_path / "b")]) == 0
    assert "sensitivity: reused the measured estimate of 4 layers" in capsys.readouterr().err
    assert len(list((cache_dir / SENSITIVITY_CACHE).glob("*.json"))) == 1
