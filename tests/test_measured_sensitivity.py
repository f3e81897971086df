"""The measured sensitivity: each entry is the weighted loss change of quantizing one layer alone,
the model is left as it was, the reward picks the estimator, and it finds what the Fisher
estimate cannot (input quantization that removes adversarial loss)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from search_fakes import AnalyticTable

from envs.mixed_precision import MixedPrecisionEnv
from haq.baselines import BaselineConfig, SensitivityConfig, run_baseline
from haq.cli import main as haq_main
from haq.core.errors import ConfigError, InternalError, RunDirError
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import attack_config
from haq.jobs.problems import make_problem
from haq.problem.config import BudgetConfig, EnvConfig, RewardConfig
from haq.problem.measured_sensitivity import LossWeights, measure_sensitivity, measure_share, merge_shares, share_layers
from haq.problem.reward_sensitivity import ROBUST_FLOOR, float_robust_accuracy, resolved_estimator, reward_sensitivity
from haq.quant import FLOAT_BITS, quantize_weight
from haq.runs.rundir import RunDir
from haq.workload import Workload

SAMPLES = SensitivityConfig(samples=64)
FULL = EvalConfig(kind="full")


def _clean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def test_an_entry_is_the_loss_change_of_that_layer_alone(digits_workload: Workload, cpu: torch.device) -> None:
    w = digits_workload
    before = {k: v.clone() for k, v in w.model.state_dict().items()}
    s = measure_sensitivity(w.model, w.layers, w.data, cpu, LossWeights(clean=1.0), SAMPLES)
    assert s.estimator == "measured" and s.samples == 64 and set(s.layers) == set(w.layer_names)
    assert all(torch.equal(v, w.model.state_dict()[k]) for k, v in before.items())
    x, y = w.data.subset("train", 64)
    name = w.layer_names[-1]
    quantized = copy.deepcopy(w.model).eval()
    layer = dict(quantized.named_modules())[name]
    with torch.no_grad():
        layer.weight.copy_(quantize_weight(layer.weight, 2))  # type: ignore[operator, union-attr]
    expected = _clean_loss(quantized, x, y) - _clean_loss(copy.deepcopy(w.model).eval(), x, y)
    assert s.layers[name].weight[2] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert all(ls.weight[FLOAT_BITS] == 0.0 and ls.activation[FLOAT_BITS] == 0.0 for ls in s.layers.values())


def test_shares_of_the_layers_measure_what_the_whole_measures(digits_workload: Workload, cpu: torch.device) -> None:
    """What a worker pool relies on: each layer's figures do not depend on which others are measured."""
    w = digits_workload
    weights = LossWeights(1.0, 2.0, attack_config(FULL, w.config.seed))
    whole = measure_sensitivity(w.model, w.layers, w.data, cpu, weights, SAMPLES)
    names = list(w.layer_names)
    shares = share_layers(names, 3)
    assert [n for share in shares for n in share] != names and sorted(n for share in shares for n in share) == sorted(names)
    assert share_layers(names, 99) == [(n,) for n in names] and share_layers(names, 1) == [tuple(names)]
    merged = merge_shares(names, [measure_share(w, weights, SAMPLES, share) for share in reversed(shares)])
    assert merged == whole and list(merged.layers) == names
    with pytest.raises(InternalError, match=r"lack layers \['"):
        merge_shares(names, [measure_share(w, weights, SAMPLES, shares[0])])


def test_the_weights_scale_each_loss_and_add(digits_workload: Workload, cpu: torch.device) -> None:
    w = digits_workload
    attack = attack_config(FULL, w.config.seed)

    def measured(clean: float, adversarial: float) -> dict[str, list[float]]:
        s = measure_sensitivity(w.model, w.layers, w.data, cpu, LossWeights(clean, adversarial, attack), SAMPLES)
        return {n: [*ls.weight.values(), *ls.activation.values()] for n, ls in s.layers.items()}

    clean, adv, both = measured(1.0, 0.0), measured(0.0, 1.0), measured(2.0, 0.5)
    for n in clean:
        assert both[n] == pytest.approx([2 * c + 0.5 * a for c, a in zip(clean[n], adv[n])], rel=1e-4, abs=1e-6)


def test_coarse_input_quantization_removes_adversarial_loss(digits_workload: Workload, cpu: torch.device) -> None:
    """Why the estimator exists: on PGD examples, 2-bit inputs to the first layer snap the
    perturbation back (its measured adversarial change is negative), which a Fisher estimate,
    non-negative by construction, cannot say."""
    w = digits_workload
    weights = LossWeights(0.0, 1.0, attack_config(FULL, w.config.seed))
    s = measure_sensitivity(w.model, w.layers, w.data, cpu, weights, SensitivityConfig(samples=128))
    first = s.layers[w.layer_names[0]]
    assert first.activation[2] < 0.0 < first.activation[1]


def test_the_reward_and_the_model_pick_the_estimator(digits_workload: Workload) -> None:
    """Measured for a robust reward on a model its attack leaves some accuracy (the digits CNN keeps
    about 40 %); Fisher when the attack breaks the float model outright, or for a clean reward."""
    cheap, full = EnvConfig(), EnvConfig(evaluation=FULL)
    auto = SensitivityConfig(samples=64)
    assert resolved_estimator(cheap, auto) == "fisher"
    assert float_robust_accuracy(full, digits_workload, 64) >= ROBUST_FLOOR
    assert resolved_estimator(full, auto, digits_workload) == "measured"
    broken = EnvConfig(evaluation=dataclasses.replace(FULL, attack_eps=1.0))
    assert float_robust_accuracy(broken, digits_workload, 64) < ROBUST_FLOOR
    assert resolved_estimator(broken, auto, digits_workload) == "fisher"
    with pytest.raises(ValueError, match="needs the workload"):
        resolved_estimator(full, auto)
    assert resolved_estimator(dataclasses.replace(full, reward=RewardConfig(robust_weight=0.0)), auto) == "fisher"
    assert resolved_estimator(full, SensitivityConfig(estimator="fisher")) == "fisher"
    assert resolved_estimator(cheap, SensitivityConfig(estimator="measured")) == "measured"
    with pytest.raises(ConfigError, match="auto, fisher, measured"):
        SensitivityConfig(estimator="hessian")


def test_a_clean_reward_measures_the_clean_loss_only(digits_workload: Workload, cpu: torch.device) -> None:
    w = digits_workload
    s = reward_sensitivity(EnvConfig(), w, SensitivityConfig(samples=64, estimator="measured"))
    direct = measure_sensitivity(w.model, w.layers, w.data, cpu, LossWeights(clean=RewardConfig().acc_weight), SAMPLES)
    assert {n: dict(ls.weight) for n, ls in s.layers.items()} == {n: dict(ls.weight) for n, ls in direct.layers.items()}


def test_a_robust_reward_s_baseline_allocates_with_the_measured_estimate(cache_dir: Path, tmp_path: Path) -> None:
    env = EnvConfig(budget=BudgetConfig(ratio=0.4), evaluation=dataclasses.replace(FULL, val_samples=60, robust_samples=20))
    problem = make_problem(env, cache_dir=cache_dir, table=AnalyticTable(), sensitivity_cache=False)  # it measures here
    cfg = BaselineConfig(method="ilp", evaluations=2, sensitivity=SensitivityConfig(samples=64))
    lines: list[str] = []
    result = run_baseline(cfg, problem, tmp_path / "ilp", log=lines.append)
    assert any(line.startswith("sensitivity: measured estimate") for line in lines)
    progress = [line for line in lines if line.startswith("measured sensitivity: layer")]
    assert len(progress) == len(problem.layer_names) and progress[-1].endswith(f"({problem.layer_names[-1]})")
    assert (tmp_path / "ilp" / "sensitivity.json").read_text().count('"estimator": "measured"') == 1
    assert 1 <= len(result.records) <= 2


def test_a_run_records_the_estimator_it_used_and_an_older_run_resumes(cache_dir: Path, tmp_path: Path) -> None:
    """``auto`` is stored resolved; a run written before the field existed used the Fisher
    estimate and resumes as one (and is refused under the measured one, naming the setting)."""
    problem = make_problem(EnvConfig(budget=BudgetConfig(ratio=0.4)), cache_dir=cache_dir, table=AnalyticTable())
    out = tmp_path / "greedy"
    cfg = BaselineConfig(method="greedy", evaluations=2, sensitivity=SAMPLES)
    first = run_baseline(cfg, problem, out)
    doc = json.loads((out / "config.json").read_text())
    assert doc["config"]["baseline"]["sensitivity"]["estimator"] == "fisher"
    del doc["config"]["baseline"]["sensitivity"]["estimator"]
    (out / "config.json").write_text(json.dumps(doc))
    assert run_baseline(cfg, problem, out, resume=True).records == first.records
    measured = dataclasses.replace(cfg, sensitivity=dataclasses.replace(SAMPLES, estimator="measured"))
    with pytest.raises(RunDirError, match="sensitivity.estimator='fisher'.*'measured'"):
        run_baseline(measured, problem, out, resume=True)
    random = BaselineConfig(method="random", evaluations=2)  # estimates none: records "auto"
    first = run_baseline(random, problem, tmp_path / "random")
    doc = json.loads((tmp_path / "random" / "config.json").read_text())
    assert doc["config"]["baseline"]["sensitivity"].pop("estimator") == "auto"
    (tmp_path / "random" / "config.json").write_text(json.dumps(doc))
    assert run_baseline(random, problem, tmp_path / "random", resume=True).records == first.records


def test_the_baseline_command_takes_the_estimator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "greedy"
    argv = ["baseline", "--method", "greedy", "--evaluator", "cheap", "--evaluations", "1", "--sensitivity-samples", "64"]
    assert haq_main([*argv, "--sensitivity", "measured", "--out", str(out)]) == 0
    assert json.loads((out / "sensitivity.json").read_text())["estimator"] == "measured"
    assert RunDir(out).read_config()["config"]["baseline"]["sensitivity"]["estimator"] == "measured"
    capsys.readouterr()
    assert haq_main([*argv, "--sensitivity", "hessian", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("unknown sensitivity estimator 'hessian'; choose one of auto, fisher, measured"), err
    assert not (tmp_path / "other").exists()


def test_a_robust_problem_s_state_features_take_a_negative_sensitivity(cache_dir: Path) -> None:
    """Observation ``v1`` on a robust reward carries the measured estimate, whose negative
    entries (a layer whose quantization removes adversarial loss) count as no error."""
    evaluation = dataclasses.replace(FULL, val_samples=60, robust_samples=20)
    env = EnvConfig(observation="v1", evaluation=evaluation)
    problem = make_problem(env, cache_dir=cache_dir, table=AnalyticTable())
    assert problem.sensitivity is not None and problem.sensitivity.estimator == "measured"
    assert min(v for ls in problem.sensitivity.layers.values() for v in ls.activation.values()) < 0.0
    obs, _ = MixedPrecisionEnv(problem=problem).reset(seed=0)
    assert obs.shape == (25,) and np.isfinite(obs).all() and obs.min() >= 0.0 and obs.max() <= 1.0
