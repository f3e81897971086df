"""Which container a measured table timed 8-bit weights in (uint8 at zero point 128, as ``haq
export`` stores them by default, or int8 with ``--int8-weights``): the build records it, extending
keeps it, checking and fitting export whole models the same way, and old tables read as built."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from cli_helpers import weight_dtypes

import latency_tables
from haq.cli import main as haq_main
from haq.core.errors import ConfigError, TableError
from haq.hardware.build import BuildConfig, extend_table
from haq.hardware.check import check_table
from haq.hardware.device.machine import MachineFingerprint
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.measured import MeasuredBackend, entry_model, export_single
from haq.hardware.networks import load_network, model_layers
from haq.jobs.document import parse_job
from haq.quant import LayerSignature, QuantPolicy
from haq.service.store import Store
from haq.service.worker import ONNX_FILE, export_best
from haq.tables.table import CostTable, load_table
from haq.tables.validation import parse

FAST = ProtocolConfig(sessions=1, warmup_runs=1, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.2, max_retries=0)
QUICK = "--sessions 1 --repeats 3 --warmup-runs 1 --warmup-s 0 --min-repeat-ms 0.2 --max-retries 0".split()
INT8, UINT8 = np.dtype(np.int8), np.dtype(np.uint8)


def _mlp_sigs() -> list[LayerSignature]:
    return [layer.signature for layer in model_layers("digits_mlp", None, None)]


@pytest.fixture(scope="module")
def int8_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "cpu-int8.json"
    extend_table(MeasuredBackend(FAST, weights="int8"), _mlp_sigs(), out, 1, models=["digits_mlp"])
    return out


class _Recording:
    """Keeps every model it is asked to time; every one takes the same made-up time."""

    def __init__(self) -> None:
        self.inner = LocalRunner(FAST)
        self.models: list[bytes] = []

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        self.models += models
        return [Measurement(((0.01,) * 3,), (1,), (), 0.0) for _ in models]

    def device_info(self) -> dict[str, Any]:
        return self.inner.device_info()


@pytest.mark.parametrize(("weights", "dtype"), [("uint8", UINT8), ("int8", INT8)])
def test_a_single_layer_model_stores_weights_in_the_asked_container(weights: str, dtype: np.dtype) -> None:
    sig = _mlp_sigs()[0]
    exported, _ = export_single(sig, 8, 8, weights=weights)
    assert weight_dtypes(exported.onnx_bytes) == {dtype}


def test_the_build_records_int8_and_its_entries_time_int8_models(int8_table: Path) -> None:
    table = load_table(int8_table)
    assert table.meta["protocol"]["weights"] == "int8" and table.weight_container == "int8"
    assert "int8 weights" in table.meta["protocol"]["precisions"]
    w8a8 = [e for e in table.entries() if (e.w_bits, e.a_bits) == (8, 8)]
    assert w8a8 and all(weight_dtypes(entry_model(table, e)) == {INT8} for e in w8a8)


def test_extending_with_the_other_container_is_refused_in_one_line(int8_table: Path) -> None:
    before = int8_table.read_bytes()
    with pytest.raises(TableError, match=r"timed with int8 weights, this build times uint8; extend it with --int8-weights"):
        extend_table(MeasuredBackend(FAST), _mlp_sigs(), int8_table, 1)
    assert int8_table.read_bytes() == before
    report = extend_table(MeasuredBackend(FAST, weights="int8"), _mlp_sigs(), int8_table, 1)
    assert report.added == 0


def test_a_check_exports_whole_models_in_the_table_container(int8_table: Path) -> None:
    runner = _Recording()
    check_table(load_table(int8_table), load_network("digits_mlp"), runner, 3)
    assert runner.models and all(weight_dtypes(m) <= {INT8} for m in runner.models)
    assert any(weight_dtypes(m) == {INT8} for m in runner.models), "some checked policy has an 8-bit layer"


def test_tables_without_the_field_read_as_they_were_built(int8_table: Path) -> None:
    raw = json.loads(int8_table.read_text())
    del raw["meta"]["protocol"]["weights"]
    raw["meta"]["protocol"]["precisions"] = "fp32; w8a8 via QDQ (QLinearConv/QGemm); weight-only ..."
    assert load_table_from(raw).weight_container == "int8", "built before the uint8 default"
    raw["meta"]["protocol"]["precisions"] = "fp32; w8a8 via QDQ (QLinearConv/QGemm), uint8 weights at zero point 128; ..."
    assert load_table_from(raw).weight_container == "uint8", "built on the day between the default and the field"
    assert latency_tables.load("example-cpu-xeon").weight_container == "int8"
    assert latency_tables.load("bitfusion").weight_container is None
    assert latency_tables.load("bitfusion").export_weights == "uint8"


def load_table_from(raw: dict[str, Any]) -> CostTable:
    return CostTable(parse(raw, "t.json"), "t")


def test_a_bad_container_in_a_table_is_one_line_naming_the_field(int8_table: Path) -> None:
    raw = json.loads(int8_table.read_text())
    raw["meta"]["protocol"]["weights"] = "fp16"
    with pytest.raises(TableError, match=r"meta\.protocol\.weights.*must be one of uint8, int8, got 'fp16'"):
        parse(raw, "t.json")


def test_int8_weights_on_an_analytical_device_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="analytical model"):
        BuildConfig(("digits_mlp",), "bitfusion", tmp_path / "t.json", weights="int8")
    with pytest.raises(ConfigError, match="choose one of uint8, int8"):
        BuildConfig(("digits_mlp",), "cpu", tmp_path / "t.json", weights="fp16")
    argv = [
        "tables",
        "build",
        "--model",
        "digits_mlp",
        "--device",
        "bitfusion",
        "--int8-weights",
        "--out",
        str(tmp_path / "t.json"),
    ]
    assert haq_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--int8-weights is for tables measured with onnxruntime" in err[0]
    assert not (tmp_path / "t.json").exists()


def test_the_command_builds_an_int8_table_and_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpu.json"
    assert (
        haq_main(["tables", "build", "--model", "digits_mlp", "--device", "cpu", "--int8-weights", "--out", str(out), *QUICK])
        == 0
    )
    assert load_table(out).weight_container == "int8"
    capsys.readouterr()
    assert haq_main(["tables", "show", str(out), "--entries", "0"]) == 0
    assert "8-bit weights timed as int8 (haq export stores them so in a policy a run priced by" in capsys.readouterr().out


AVX2 = MachineFingerprint("AMD EPYC", arch="x86_64", flags=("avx", "avx2", "fma", "sse4_2"))


@pytest.mark.parametrize(
    ("machine", "saturates"),
    [
        (AVX2, True),
        (MachineFingerprint("Xeon", arch="x86_64", flags=("avx2", "avx512bw")), True),
        (MachineFingerprint("Xeon", arch="x86_64", flags=("avx2", "avx512bw", "avx512_vnni")), False),
        (MachineFingerprint("Core", arch="AMD64", flags=("avx2", "avx_vnni")), False),
        (MachineFingerprint("Xeon", arch="x86_64", flags=("amx_int8", "amx_tile")), False),
        (MachineFingerprint("Neoverse", arch="aarch64", flags=("asimd", "asimddp")), False),
    ],
)
def test_which_cpus_saturate_int8_weights(machine: MachineFingerprint, saturates: bool) -> None:
    assert machine.saturates_int8_weights is saturates


@pytest.mark.parametrize(("weights", "warned"), [("int8", True), ("uint8", False)])
def test_timing_int8_weights_on_a_saturating_cpu_warns_in_one_line(weights: str, warned: bool) -> None:
    said: list[str] = []
    MeasuredBackend(FAST, said.append, machine=AVX2, weights=weights).metadata(1)
    assert len(said) == int(warned)
    if warned:
        assert said[0].startswith("warning: ") and "no VNNI or AMX" in said[0] and "\n" not in said[0]


def test_a_job_document_asks_for_int8_and_the_flag_overrides_it(tmp_path: Path) -> None:
    doc = {"version": 1, "kind": "table_build", "build": {"models": ["digits_mlp"], "device": "cpu", "out": "t.json"}}
    assert parse_job(doc).section("build").weights == "uint8"
    asked = parse_job({**doc, "build": {**doc["build"], "weights": "int8"}}).section("build")
    assert asked.weights == "int8"
    with pytest.raises(ConfigError, match="build.weights"):
        parse_job({**doc, "build": {**doc["build"], "weights": "int4"}})
    job = tmp_path / "build.json"
    quick = {"sessions": 1, "repeats": 3, "warmup_runs": 1, "warmup_s": 0.0, "min_repeat_ms": 0.2, "max_retries": 0}
    job.write_text(json.dumps({**doc, "build": {**doc["build"], "out": str(tmp_path / "t.json")}, "protocol": quick}))
    assert haq_main(["tables", "build", "--config", str(job), "--int8-weights"]) == 0
    assert load_table(tmp_path / "t.json").weight_container == "int8"


def test_a_run_priced_by_an_int8_table_exports_int8_unless_asked_otherwise(
    int8_table: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))
    store = Store(tmp_path / "store")
    run = store.run_dir("0123456789abcdef")
    model = ["--model", "digits_mlp"]
    argv = ["baseline", *model, "--device", str(int8_table), "--method", "random", "--evaluations", "2", "--evaluator", "cheap"]
    assert haq_main([*argv, "--max-bits", "32", "--budget", "1.5", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["export_weights"] == "int8"
    for name in ("best_policy.json", "final_policy.json"):
        assert QuantPolicy.load(run / name).meta["export_weights"] == "int8"
    capsys.readouterr()

    def export(policy: Path, *flags: str) -> tuple[set[np.dtype], list[str]]:
        onnx = tmp_path / f"m{len(flags)}.onnx"
        assert haq_main(["export", *model, "--policy", str(policy), "--onnx", str(onnx), "--emulate", *flags]) == 0
        return weight_dtypes(onnx.read_bytes()), capsys.readouterr().err.strip().splitlines()

    dtypes, said = export(run / "final_policy.json")
    assert dtypes == {INT8} and len(said) == 1 and "8-bit weights stored as int8, the container its run's table timed" in said[0]
    dtypes, said = export(run / "final_policy.json", "--weights", "uint8")
    assert dtypes == {UINT8} and len(said) == 1 and said[0].startswith("warning: ") and "priced with int8" in said[0]

    export_best(store, "0123456789abcdef")
    assert weight_dtypes((store.job_dir("0123456789abcdef") / ONNX_FILE).read_bytes()) == {INT8}

    other = tmp_path / "uint8.json"
    other.write_text(json.dumps({**json.loads((run / "best_policy.json").read_text()), "meta": {"export_weights": "uint8"}}))
    quick = ["--evaluator", "cheap", "--samples", "60", "--measure", "never"]
    assert haq_main(["evaluate", *model, "--device", str(int8_table), "--policy", str(other), *quick]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "priced with" in line]
    assert warned == [
        f"warning: {other} was priced with uint8 weights and table cpu-int8 timed int8: the latency below is of the "
        "model stored as int8, not of what haq export writes for this policy by default (uint8)"
    ]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads((run / "best_policy.json").read_text()), "meta": {"export_weights": "int4"}}))
    assert haq_main(["export", *model, "--policy", str(bad), "--onnx", str(tmp_path / "bad.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'export_weights' must be one of uint8, int8, got 'int4'" in err[0]
