"""``haq evaluate``: a policy file in, fine-tuned clean / robust accuracy and its costs out."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from haq.cli import main as haq_main
from haq.core import config as serial
from haq.core.errors import ConfigError, UsageError
from haq.evaluation.config import EVALUATORS, EvalConfig
from haq.evaluation.evaluators import EVALUATOR_KINDS
from haq.evaluation.final import (
    FinalEvalConfig,
    evaluate_final,
    measurement_skipped,
    table_describes_this_machine,
)
from haq.hardware.device.machine import cpu_model
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.feedback import MeasuredCost, QDQExporter
from haq.quant import LayerBits, QuantPolicy
from haq.workload import Workload
from latency_tables import load as load_table

TINY = ["--samples", "60", "--robust-samples", "20", "--dq-epochs", "1"]


@pytest.fixture()
def mixed_policy(tmp_path: Path, digits_workload: Workload) -> Path:
    names = digits_workload.layer_names
    bits = {n: LayerBits(8, 8) if n in (names[0], names[-1]) else LayerBits(4, 4) for n in names}
    path = tmp_path / "policy.json"
    QuantPolicy(bits).save(path)
    return path


def test_evaluate_prints_accuracies_and_costs(
    mixed_policy: Path,
    digits_workload: Workload,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert haq_main(["evaluate", "--policy", str(mixed_policy), "--device", "bitfusion", *TINY]) == 0
    out = capsys.readouterr().out
    assert "60 test images" in out
    clean = re.search(r"\| clean accuracy \| ([\d.]+)% \| ([\d.]+)% \|", out)
    robust = re.search(r"\| robust accuracy \(worst case\) \| ([\d.]+)% \| ([\d.]+)% \|", out)
    assert clean and robust, out
    # The same evaluation through the library (seeded, so identical) gives the printed numbers.
    table = load_table("bitfusion")
    evaluation = dataclasses.replace(FinalEvalConfig().evaluation, finetune_epochs=1, robust_samples=20)
    direct = evaluate_final(
        digits_workload,
        table,
        QuantPolicy.load(mixed_policy),
        FinalEvalConfig(samples=60, measure="never", evaluation=evaluation),
    )
    assert direct.metrics.robust_acc is not None and direct.reference.robust_acc is not None
    assert float(clean.group(1)) == pytest.approx(100 * direct.metrics.clean_acc, abs=0.005)
    assert float(clean.group(2)) == pytest.approx(100 * direct.reference.clean_acc, abs=0.005)
    assert float(robust.group(1)) == pytest.approx(100 * direct.metrics.robust_acc, abs=0.005)
    assert float(robust.group(2)) == pytest.approx(100 * direct.reference.robust_acc, abs=0.005)
    # Attacked images are a subset of the clean-correct ones, 20 of them: steps of 5 points.
    assert float(robust.group(1)) < float(clean.group(1)) and float(robust.group(2)) < float(clean.group(2))
    assert float(robust.group(1)) % 5.0 == pytest.approx(0.0, abs=1e-6)
    for metric in table.metrics:
        value = re.search(rf"\| predicted {metric} \(m[sJ]\) \| ([\d.e+-]+) \|", out)
        assert value, out
        assert float(value.group(1)) == pytest.approx(direct.predicted[metric], rel=1e-5)
    assert "| weight size (KiB) |" in out and "| measured latency (ms) | n/a |" in out
    assert "does not describe this machine" in out


def test_measurement_on_this_machine(digits_workload: Workload) -> None:
    table = load_table("bitfusion")
    policy = QuantPolicy.uniform(digits_workload.layer_names, 8)
    quick = LocalRunner(
        ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.0, max_retries=0)
    )
    cfg = FinalEvalConfig(samples=40, evaluation=EvalConfig(kind="cheap"), measure="local")
    with pytest.raises(UsageError, match="needs a measurer"):
        evaluate_final(digits_workload, table, policy, cfg)
    report = evaluate_final(digits_workload, table, policy, cfg, measurer=MeasuredCost(digits_workload, quick, QDQExporter()))
    assert report.metrics.robust_acc is None and report.samples == 40
    assert report.measured_ms is not None and report.measured_ms > 0
    assert report.predicted["latency"] == pytest.approx(table.policy_cost(digits_workload.layers, policy, "latency"))
    assert report.predicted["size_bits"] == report.metrics.size_bits


def test_only_onnxruntime_tables_of_this_cpu_describe_this_machine() -> None:
    class Meta:
        def __init__(self, meta: dict[str, object]) -> None:
            self.meta = meta

    assert table_describes_this_machine(Meta({"runtime": {"name": "onnxruntime 1.20"}, "device": {"cpu": cpu_model()}}))  # type: ignore[arg-type]
    assert not table_describes_this_machine(Meta({"runtime": {"name": "onnxruntime"}, "device": {"cpu": "another CPU"}}))  # type: ignore[arg-type]
    assert not table_describes_this_machine(load_table("bitfusion"))


def test_every_configurable_evaluator_kind_is_built() -> None:
    # 'multi' screens with one evaluator and confirms with another during a search: never built alone.
    assert set(EVALUATOR_KINDS) == set(EVALUATORS) - {"multi"}
    assert "multi" in EVALUATORS


def test_measurement_is_decided_from_the_mode_and_the_table() -> None:
    bitfusion = load_table("bitfusion")
    assert "--measure never" in str(measurement_skipped(FinalEvalConfig(measure="never"), bitfusion))
    assert "does not describe this machine" in str(measurement_skipped(FinalEvalConfig(), bitfusion))
    assert measurement_skipped(FinalEvalConfig(measure="local"), bitfusion) is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--policy", "missing.json"], "cannot read policy file missing.json"),
        (["--device", "tpu-v9"], "'tpu-v9' is neither a shipped cost table"),
        (["--split", "train"], "unknown split 'train'; choose one of test, val"),
        (["--measure", "sometimes"], "unknown measure mode 'sometimes'; choose one of auto, local, never"),
        (["--samples", "0"], "samples must be an integer >= 1"),
        (["--evaluator", "fast"], "unknown evaluator 'fast'; choose one of cheap, screen, full"),
        (["--measure", "local", "--evaluator", "cheap"], "cannot run natively .*--emulate"),
    ],
)
def test_bad_inputs_are_one_line_errors(
    mixed_policy: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    match: str,
) -> None:
    argv = ["evaluate", "--policy", str(mixed_policy), *TINY, *extra]
    assert haq_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("haq: error: ") and re.search(match, err[-1]), err


def test_a_policy_for_another_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.json"
    QuantPolicy.uniform(["features.0", "classifier"], 8).save(path)
    assert haq_main(["evaluate", "--policy", str(path), *TINY]) == 2
    assert "policy names unknown layer(s)" in capsys.readouterr().err


def test_final_eval_config_validates() -> None:
    with pytest.raises(ConfigError, match="unknown split"):
        FinalEvalConfig(split="holdout")
    cfg = FinalEvalConfig(split="val", samples=50, evaluation=EvalConfig(kind="cheap", attacks=("fgsm",)), measure="never")
    assert serial.load(FinalEvalConfig, serial.dump(cfg)) == cfg
    assert serial.from_dict(FinalEvalConfig, serial.to_dict(FinalEvalConfig())) == FinalEvalConfig()
    with pytest.raises(ConfigError, match="unknown field"):
        serial.from_dict(FinalEvalConfig, {"evaluation": {"kind": "cheap", "bogus": 1}})
