"""Tables know their machine: the fingerprint, its place in a table, the warning on another
machine (``--strict`` refuses) and ``--device cpu`` building and fitting this machine's table."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

import latency_tables
from haq.cli import main
from haq.core.errors import TableError
from haq.evaluation.config import EvalConfig
from haq.hardware.build import extend_table
from haq.hardware.device.machine import (
    PROBE_TOLERANCE,
    MachineFingerprint,
    fingerprint_differences,
    machine_fingerprint,
    parse_cpuinfo,
    read_caches,
)
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import fit_table
from haq.hardware.fit_observations import observations_path
from haq.hardware.networks import model_layers, network_of
from haq.jobs import machine, problems
from haq.problem.budget import build_budget_model
from haq.problem.config import BudgetConfig, EnvConfig
from haq.quant import FLOAT_BITS, LayerSignature, QuantPolicy
from haq.tables.schema import Entry, GraphExtras, TransitionRule, network_fingerprint
from haq.tables.table import load_table, save_table
from haq.workload import WorkloadConfig

CPUINFO_X86 = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 ssse3 sse4_1 sse4_2 fma avx avx2 f16c smep rdrand avx512f avx512_vnni avx_vnni amx_tile amx_int8

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 8
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse2 ssse3 sse4_1 sse4_2 fma avx avx2 f16c smep rdrand avx512f avx512_vnni avx_vnni amx_tile amx_int8

"""

CPUINFO_ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimddp sve i8mm bf16
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""

HERE = MachineFingerprint(
    cpu="Intel(R) Xeon(R) Processor",
    vendor="GenuineIntel",
    family="6",
    model="143",
    stepping="8",
    arch="x86_64",
    flags=("avx", "avx2", "avx512_vnni", "avx512f", "amx_int8", "amx_tile", "fma"),
    logical_cores=2,
    physical_cores=1,
    caches_kib={"L1d": 48, "L1i": 32, "L2": 2048, "L3": 107520},
    onnxruntime="1.31.1",
    ort_build="CPU; CPUExecutionProvider",
    probe_ms=0.05,
)
"""A fake "this machine"; :data:`OTHER` shares its brand string but not its generation."""
OTHER = dataclasses.replace(
    HERE,
    model="106",
    stepping="6",
    flags=("avx", "avx2", "avx512_vnni", "avx512f", "fma"),
    caches_kib={"L1d": 48, "L1i": 32, "L2": 1280, "L3": 55296},
    probe_ms=0.08,
)


class FakeMeasuredBackend:
    """Measured-table metadata with a given fingerprint and made-up costs: no timing at all."""

    def __init__(self, machine: MachineFingerprint) -> None:
        self.machine = machine
        self.priced: list[str] = []

    def metadata(self, batch: int) -> dict[str, Any]:
        return {
            "device": {"name": "cpu-test", "description": "a fake CPU, timed on this machine"},
            "runtime": {"name": "onnxruntime", "version": self.machine.onnxruntime},
            "threads": 1,
            "protocol": {"fake": True, "weights": "uint8"},
            "units": {"latency": "ms", "energy": "mJ"},
            "metrics": ["latency"],
            "constants": {},
            "machine": self.machine.to_dict(),
        }

    def entries(self, sig: LayerSignature) -> list[Entry]:
        self.priced.append(sig.key())
        return [
            Entry(sig.key(), w, a, 1e-6 * sig.macs * (0.5 if w == 8 else 1.0) + 1e-3, 0.0, 1, "measured", "fake")
            for w, a in ((8, 8), (32, 32))
        ]


class FakeRunner:
    """Whole-model "times" on a given machine: a function of the exported model's size (an int8
    layer's weights take a quarter of a float one's bytes), so they move with the bits; no timing."""

    protocol = ProtocolConfig()

    def __init__(self, machine: MachineFingerprint) -> None:
        self.machine = machine
        self.timed = 0

    def measure(self, onnx_bytes: bytes) -> Measurement:
        return self.measure_many([onnx_bytes])[0]

    def measure_many(self, models: Any) -> list[Measurement]:
        self.timed += len(models)
        return [Measurement(((0.01 + 1e-7 * len(m),) * 3,), (1,), (), 0.0) for m in models]

    def device_info(self) -> dict[str, Any]:
        return {"fingerprint": self.machine.to_dict()}


def _digits_sigs() -> list[LayerSignature]:
    return [layer.signature for layer in model_layers("digits_cnn", None, None)]


@pytest.fixture(scope="module")
def measured_here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A measured table of digits_cnn that records :data:`HERE`."""
    out = tmp_path_factory.mktemp("fp") / "here.json"
    extend_table(FakeMeasuredBackend(HERE), _digits_sigs(), out, 1, models=["digits_cnn"])
    return out


class Lines:
    """Collects what a command would print on stderr."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)


# ---------------------------------------------------------------- the fingerprint


def test_cpuinfo_x86_is_parsed_and_flags_filtered() -> None:
    fp = parse_cpuinfo(CPUINFO_X86)
    assert (fp.cpu, fp.vendor) == ("Intel(R) Xeon(R) Processor", "GenuineIntel")
    assert (fp.family, fp.model, fp.stepping) == ("6", "143", "8")
    assert fp.flags == (
        "amx_int8",
        "amx_tile",
        "avx",
        "avx2",
        "avx512_vnni",
        "avx512f",
        "avx_vnni",
        "f16c",
        "fma",
        "sse4_1",
        "sse4_2",
        "ssse3",
    )  # no smep, rdrand, fpu: they select no kernel
    assert fp.logical_cores == 2 and fp.physical_cores == 1  # two hyper-threads of one core


def test_cpuinfo_arm64_is_parsed() -> None:
    fp = parse_cpuinfo(CPUINFO_ARM)
    assert (fp.vendor, fp.family, fp.model, fp.stepping) == ("0x41", "8", "0xd40", "0x1/1")
    assert fp.flags == ("asimd", "asimddp", "asimdhp", "bf16", "fphp", "i8mm", "sve")
    assert fp.cpu == "" and fp.physical_cores is None
    assert parse_cpuinfo("") == MachineFingerprint(cpu="")


def test_caches_are_read_from_sysfs_layout(tmp_path: Path) -> None:
    layout = [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K"), ("3", "Unified", "105M")]
    for i, (level, kind, size) in enumerate(layout):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(value + "\n")
    assert read_caches(tmp_path) == {"L1d": 48, "L1i": 32, "L2": 2048, "L3": 107520}
    assert read_caches(tmp_path / "absent") == {}


def test_identity_is_stable_and_ignores_the_probe() -> None:
    assert HERE.identity == dataclasses.replace(HERE, probe_ms=0.5, flags=tuple(reversed(HERE.flags))).identity
    assert HERE.identity != OTHER.identity and len(HERE.identity) == 16
    assert MachineFingerprint.from_dict(json.loads(json.dumps(HERE.to_dict()))) == HERE


def test_differences_name_fields_and_probe_has_a_tolerance() -> None:
    assert fingerprint_differences(HERE, HERE) == []
    assert fingerprint_differences(HERE, dataclasses.replace(HERE, probe_ms=0.05 * (1 + 0.9 * PROBE_TOLERANCE))) == []
    slow = fingerprint_differences(HERE, dataclasses.replace(HERE, probe_ms=0.05 * (1 + 1.5 * PROBE_TOLERANCE)))
    assert len(slow) == 1 and slow[0].startswith("probe")
    fast = fingerprint_differences(HERE, dataclasses.replace(HERE, probe_ms=0.05 / (1 + 1.5 * PROBE_TOLERANCE)))
    assert len(fast) == 1 and fast[0].startswith("probe")  # symmetric: a much faster machine is another one too
    diff = " ; ".join(fingerprint_differences(HERE, OTHER))
    for needle in ("family/model/stepping 6/143/8 -> 6/106/6", "-amx_int8", "-amx_tile", "L2 2 MiB -> 1280 KiB", "probe"):
        assert needle in diff
    assert "cpu" not in diff.split("family")[0]  # the brand strings are equal: that is the point


def test_this_machine_has_a_fingerprint() -> None:
    fp = machine_fingerprint(probe=False)
    assert fp.cpu and fp.logical_cores >= 1 and fp.onnxruntime and fp.probe_ms is None
    assert fp.identity == machine_fingerprint(probe=False).identity


# ---------------------------------------------------------------- in a table


def test_measured_table_records_the_machine_at_version_2(measured_here: Path) -> None:
    raw = json.loads(measured_here.read_text())
    assert raw["version"] == 2 and raw["meta"]["machine"]["identity"] == HERE.identity
    assert load_table(measured_here).meta["machine"]["probe_ms"] == pytest.approx(0.05)
    assert json.loads(latency_tables.path_of("bitfusion").read_text())["version"] == 1  # no machine: still version 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.__setitem__("version", 1), "meta.machine"),
        (lambda r: r["meta"]["machine"].pop("identity"), "meta.machine.identity"),
        (lambda r: r["meta"]["machine"].__setitem__("probe_ms", -1.0), "meta.machine.probe_ms"),
        (lambda r: r["meta"]["machine"].__setitem__("flags", "avx2"), "meta.machine.flags"),
        (lambda r: r.__setitem__("version", 99), "version"),
    ],
)
def test_bad_machine_record_is_one_line_error(measured_here: Path, tmp_path: Path, mutate: Any, field: str) -> None:
    raw = json.loads(measured_here.read_text())
    mutate(raw)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(TableError, match=f"field '{field}'") as exc:
        load_table(bad)
    assert "\n" not in str(exc.value)


def test_extending_a_table_from_another_machine_is_refused(measured_here: Path, tmp_path: Path) -> None:
    copy = tmp_path / "t.json"
    copy.write_text(measured_here.read_text())
    more = [layer.signature for layer in model_layers("digits_mlp", None, None)]
    with pytest.raises(TableError, match="measured on another machine"):
        extend_table(FakeMeasuredBackend(OTHER), more, copy, 1)
    extend_table(FakeMeasuredBackend(dataclasses.replace(HERE, probe_ms=0.051)), more, copy, 1)  # same machine: fine
    assert load_table(copy).meta["machine"]["probe_ms"] == pytest.approx(0.05)  # the build-time probe is kept


# ---------------------------------------------------------------- loading: warn, refuse, stay silent


def test_other_machine_warns_in_one_line(measured_here: Path) -> None:
    say = Lines()
    machine.check_machine(load_table(measured_here), strict=False, log=say, model="digits_cnn", here=OTHER)
    assert len(say.lines) == 1 and "\n" not in say.lines[0]
    line = say.lines[0]
    assert line.startswith("warning: table here was measured on another machine")
    assert "family/model/stepping" in line and "haq tables build --device cpu --model digits_cnn --out" in line


def test_strict_refuses_in_one_line(measured_here: Path) -> None:
    with pytest.raises(TableError, match="refused under --strict") as exc:
        machine.check_machine(load_table(measured_here), strict=True, log=Lines(), here=OTHER)
    assert "\n" not in str(exc.value) and "haq tables build --device cpu" in str(exc.value)


def test_same_machine_is_silent_even_under_strict(measured_here: Path) -> None:
    say = Lines()
    noisy_but_same = dataclasses.replace(HERE, probe_ms=0.06)  # +20 %: within the probe's tolerance
    machine.check_machine(load_table(measured_here), strict=True, log=say, here=noisy_but_same)
    assert say.lines == []


def test_analytical_tables_never_warn() -> None:
    say = Lines()
    for name in ("bitfusion", "bismo-edge", "bismo-cloud"):
        machine.check_machine(latency_tables.load(name), strict=True, log=say, here=OTHER)
    assert say.lines == []


def test_old_table_without_fingerprint_cannot_be_verified() -> None:
    table = latency_tables.load("example-cpu-xeon")
    assert "machine" not in table.meta
    say = Lines()
    machine.check_machine(table, strict=False, log=say, here=HERE)
    assert len(say.lines) == 1 and "cannot be verified" in say.lines[0]
    with pytest.raises(TableError, match="cannot be verified"):
        machine.check_machine(table, strict=True, log=say, here=HERE)


def test_table_timed_by_a_device_agent_is_not_checked(measured_here: Path, tmp_path: Path) -> None:
    raw = json.loads(measured_here.read_text())
    raw["meta"]["machine"]["remote"] = True
    remote = tmp_path / "phone.json"
    remote.write_text(json.dumps(raw))
    say = Lines()
    machine.check_machine(load_table(remote), strict=True, log=say, here=OTHER)
    assert say.lines == []


def test_renamed_and_machine_names_have_clear_errors() -> None:
    with pytest.raises(TableError, match="now 'example-cpu-xeon'.*--device cpu"):
        latency_tables.load("cpu-intel-r-xeon-r-processor")
    with pytest.raises(TableError, match="this machine's measured table"):
        latency_tables.load("cpu")


def test_cost_strict_refuses_the_example_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [layer.name for layer in model_layers("digits_cnn", None, None)]
    policy = tmp_path / "p.json"
    QuantPolicy.uniform(names, 8).save(policy)
    argv = ["cost", "--model", "digits_cnn", "--policy", str(policy), "--device", "example-cpu-xeon"]
    assert main([*argv, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("haq: error: table example-cpu-xeon") and "--strict" in err[0]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("warning:")] and "example-cpu-xeon" in captured.out


# ---------------------------------------------------------------- --device cpu: this machine's table


def _this_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[FakeMeasuredBackend, FakeRunner]:
    """``--device cpu`` on the fake machine :data:`HERE`, its table cache in ``tmp_path``."""
    monkeypatch.setenv("HAQ_CACHE_DIR", str(tmp_path))
    backend, runner = FakeMeasuredBackend(HERE), FakeRunner(HERE)
    monkeypatch.setattr(machine, "machine_fingerprint", lambda: HERE)
    monkeypatch.setattr(machine, "machine_backend", lambda here, log: backend)
    monkeypatch.setattr(machine, "machine_runner", lambda log, journal=None: runner)
    return backend, runner


def _fitted(table_path: Path, model: str) -> bool:
    table = load_table(table_path)
    return network_fingerprint(model_layers(model, None, None), table.batch) in table.data.graph.measured_whole()


def test_device_cpu_builds_and_fits_this_machines_table_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend, runner = _this_machine(monkeypatch, tmp_path)
    say = Lines()
    table = problems.load_device_table("cpu", WorkloadConfig(model="digits_cnn"), strict=True, log=say)
    path = tmp_path / "tables" / f"cpu-intel-r-xeon-r-processor-{HERE.identity}.json"
    assert table.path == path and path.is_file() and table.meta["machine"]["identity"] == HERE.identity
    assert len(backend.priced) == 4 and any("measuring 4 layer signature(s) of digits_cnn" in line for line in say.lines)
    assert any(line.startswith("[1/4]") for line in say.lines)  # progress, one line per signature
    table.check_covers(model_layers("digits_cnn", None, None))
    # fitted on whole-model measurements of digits_cnn, and the table it returns prices by that fit
    assert any("fitting this machine's table to digits_cnn" in line for line in say.lines)
    timed = runner.timed
    assert timed > 3 and _fitted(path, "digits_cnn")
    layers = model_layers("digits_cnn", None, None)
    mixed = QuantPolicy(
        {layer.name: QuantPolicy.uniform([layer.name], 8 if i % 2 else FLOAT_BITS)[layer.name] for i, layer in enumerate(layers)}
    )
    layer_sum = sum(table.layer_cost(x.signature, mixed[x.name].w_bits, mixed[x.name].a_bits) for x in layers)
    assert table.policy_cost(layers, mixed) != pytest.approx(layer_sum, rel=1e-6)
    # a budget on it knows the network's true cheapest and dearest policies, boundaries included,
    # and each layer's cost inside the network (the fitted int8 terms), not its entry alone
    bm = build_budget_model(layers, table, "latency", 1.0, None, 2, FLOAT_BITS, None)
    inside = table.compile(layers)
    alone = []
    for i, (choices, layer) in enumerate(zip(bm.layers, layers)):
        assert choices.costs == tuple(inside.layer_costs(i)[p] for p in choices.pairs)
        alone += [cost != table.layer_cost(layer.signature, *p) for cost, p in zip(choices.costs, choices.pairs)]
    assert any(alone)
    every = [bm.policy_cost(p) for p in itertools.product(*(c.pairs for c in bm.layers))]
    assert (bm.budget.cheapest, bm.budget.dearest) == (pytest.approx(min(every)), pytest.approx(max(every)))
    # the made-up timings make a free fit price the all-int8 network below zero (-0.20 ms): the fit
    # keeps the cheapest configuration at least an empty model's call (the probe's made-up 0.01 ms)
    assert bm.budget.cheapest >= 0.01 * (1 - 1e-6)

    again = Lines()
    assert problems.load_device_table("cpu", WorkloadConfig(model="digits_cnn"), strict=True, log=again).path == path
    assert len(backend.priced) == 4 and runner.timed == timed and again.lines == []  # cached: nothing timed or said

    problems.load_device_table("cpu", WorkloadConfig(model="digits_mlp"), log=again)
    assert set(load_table(path).meta["models"]) == {"digits_cnn", "digits_mlp"}  # extended for a new model
    # the fake MLP's layers cost less than the call overhead fitted on the CNN: the build drops the
    # fitted terms instead of saving a table that cannot load, and the fit makes them again
    assert any("its fitted graph terms are dropped" in line for line in again.lines)
    assert any("digits_cnn: reused" in line for line in again.lines)  # refitted jointly, its measurements reused
    assert _fitted(path, "digits_cnn") and _fitted(path, "digits_mlp")
    assert [w.model for w in machine.read_workloads(machine.workloads_path(path))] == ["digits_cnn", "digits_mlp"]


def test_a_machine_table_timed_with_int8_weights_is_set_aside_and_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built before haq exported uint8 weights, it priced the int8 kernels: its entries and the
    whole models its fit kept are kept beside it, not used, and the next use measures anew."""
    backend, _ = _this_machine(monkeypatch, tmp_path)
    problems.load_device_table("cpu", WorkloadConfig(model="digits_cnn"), log=Lines())
    path = machine.machine_table_path(HERE)
    old = json.loads(path.read_text())
    del old["meta"]["protocol"]["weights"]  # as such a table was written: int8, unrecorded
    path.write_text(json.dumps(old))
    kept = observations_path(path).read_bytes()
    priced = len(backend.priced)
    say = Lines()
    table = problems.load_device_table("cpu", WorkloadConfig(model="digits_cnn"), log=say)
    assert table.weight_container == "uint8" and len(backend.priced) == 2 * priced
    assert [line for line in say.lines if "timed int8 weights, and haq export writes uint8: measuring it again" in line]
    assert json.loads(path.with_name(path.name + ".int8-weights").read_text()) == old
    assert path.with_name(observations_path(path).name + ".int8-weights").read_bytes() == kept
    assert _fitted(path, "digits_cnn"), "fitted again on fresh whole-model measurements"


def test_a_machine_table_that_cannot_be_fitted_is_used_as_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _this_machine(monkeypatch, tmp_path)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise TableError("fitting device terms needs at least 3 measured configurations, got 2")

    monkeypatch.setattr(machine, "fit_table", refuse)
    say = Lines()
    table = problems.load_device_table("cpu", WorkloadConfig(model="digits_cnn"), log=say)
    table.check_covers(model_layers("digits_cnn", None, None))
    assert [line for line in say.lines if line.startswith("warning: this machine's table could not be fitted to digits_cnn")]


def test_a_bad_workloads_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.workloads"
    path.write_text('{"format": "haq.machine_workloads", "version": 1, "workloads": [{"model": "resnet20", "colour": "red"}]}')
    with pytest.raises(TableError) as exc:
        machine.read_workloads(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value) and "delete" in str(exc.value)
    path.write_text('{"format": "something-else", "version": 1}')
    with pytest.raises(TableError, match="not a haq.machine_workloads version 1 file; delete it"):
        machine.read_workloads(path)
    machine.write_workloads(path, [WorkloadConfig(model="resnet20", input_size=40)])
    assert machine.read_workloads(path) == [WorkloadConfig(model="resnet20", input_size=40)]


def test_search_problem_on_device_cpu_uses_this_machines_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    _this_machine(monkeypatch, tmp_path)  # the table cache; the trained model comes from cache_dir
    cfg = EnvConfig(table="cpu", max_bits=FLOAT_BITS, budget=BudgetConfig(ratio=0.8), evaluation=EvalConfig(kind="cheap"))
    problem = problems.make_problem(cfg, cache_dir=cache_dir, log=Lines(), strict=True)
    assert problem.table.meta["machine"]["identity"] == HERE.identity
    assert problem.table.path == machine.machine_table_path(HERE)


def test_one_network_is_fitted_once_and_a_model_at_two_inputs_under_two_names() -> None:
    small = network_of(WorkloadConfig(model="resnet20", input_size=16))
    same = network_of(WorkloadConfig(model="resnet20", input_shape=(1, 16, 16)))  # another way to say it
    usual = network_of(WorkloadConfig(model="resnet20"))
    cnn = network_of(WorkloadConfig(model="digits_cnn"))
    out = machine.distinct([small, same, usual, cnn], 1)
    assert [n.name for n in out] == ["resnet20@1x16x16", "resnet20@1x32x32", "digits_cnn"]
    assert out[0].layers is small.layers and out[2] is cnn


def test_a_measured_table_says_when_it_was_not_fitted_on_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, runner = _this_machine(monkeypatch, tmp_path)
    path = tmp_path / "mine.json"
    mlp = [x.signature for x in model_layers("digits_mlp", None, None)]
    extend_table(FakeMeasuredBackend(HERE), [*_digits_sigs(), *mlp], path, 1, models=["digits_cnn", "digits_mlp"])
    say = Lines()
    problems.load_device_table(str(path), WorkloadConfig(model="digits_cnn"), log=say)
    warned = [line for line in say.lines if line.startswith("warning: table mine is not fitted")]
    assert len(warned) == 1 and f"haq tables fit --model digits_cnn --device {path}" in warned[0]
    assert "\n" not in warned[0]

    fit_table(load_table(path), [network_of(WorkloadConfig(model="digits_cnn"))], runner, 8, path)
    fitted = Lines()
    problems.load_device_table(str(path), WorkloadConfig(model="digits_cnn"), log=fitted)
    assert fitted.lines == []  # fitted on this very network: nothing to say
    other = Lines()
    problems.load_device_table(str(path), WorkloadConfig(model="digits_mlp"), log=other)
    noted = [line for line in other.lines if line.startswith("note: table mine was not fitted on digits_mlp")]
    assert len(noted) == 1 and "haq tables fit --model digits_mlp digits_cnn" in noted[0]
    assert not _said(lambda log: problems.load_device_table("bitfusion", WorkloadConfig(model="digits_cnn"), log=log))
    # boundary rules only (an older fit): they price it, and the note says so
    rule = TransitionRule((8, 8), (32, 32), 0.0, 1e-6, None, None, "measured")
    rules_only = tmp_path / "rules.json"
    save_table(load_table(path).with_graph(GraphExtras(rules=(rule,))).data, rules_only)
    said = _said(lambda log: problems.load_device_table(str(rules_only), WorkloadConfig(model="digits_mlp"), log=log))
    assert len(said) == 1 and said[0].startswith("note: table rules was not fitted on digits_mlp; only its boundary terms")


def _said(call: Any) -> list[str]:
    lines = Lines()
    call(lines)
    return lines.lines
