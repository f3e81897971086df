"""Pricing a network by parts: what onnxruntime runs between layers is found in the compiled
graph, rebuilt as one-node models that run alone, and the call overhead is fitted in closed form."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from table_helpers import load_error
from torch import nn

from haq.export import ExportOptions, export_policy
from haq.export.verify import optimized_graph
from haq.hardware import fit
from haq.hardware.build import extend_table
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.session import random_feeds
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import fit_table, layer_sum
from haq.hardware.measured import MeasuredBackend
from haq.hardware.networks import Network, export_all, load_network, model_layers, policy_of
from haq.hardware.parts import (
    LAYER_KERNELS,
    NODE,
    OUTPUT_PROBE,
    Parts,
    bounded_overhead,
    call_cost_models,
    call_overhead,
    compile_graph,
    fit_overhead,
    kernel_kind,
    overhead_models,
    parts_ms,
    timed_call_cost,
    uniform,
)
from haq.quant import QuantPolicy, discover_layers
from haq.tables.schema import CALL_KINDS, GraphExtras, NetworkTerms, PartsCall, term_domain
from haq.tables.table import load_table

F, Q = (32, 32), (8, 8)
FAST = ProtocolConfig(sessions=1, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.2, max_retries=0)


@pytest.fixture(scope="module")
def net() -> Network:
    """Conv, max-pool, conv with a residual add, classifier: pools, adds and layout changes between layers."""

    class Small(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8 * 6 * 6, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.pool(torch.relu(self.a(x)))
            y = torch.relu(self.b(y) + y)
            return self.fc(torch.flatten(y, 1))

    torch.manual_seed(0)
    model = Small().eval()
    shape = (3, 12, 12)
    return Network("small", model, discover_layers(model, shape), shape, torch.rand((4, *shape)))


def _export(net: Network, bits: list[tuple[int, int]]) -> bytes:
    policy = policy_of(net.layers, bits)
    return export_policy(net.model, net.layers, policy, net.input_shape, net.calibration, ExportOptions()).onnx_bytes


@pytest.mark.parametrize("bits", [[Q, Q, Q], [F, F, F], [Q, F, Q], [F, Q, F], [F, Q, (4, 32)], [Q, F, (8, 32)]])
def test_every_compiled_node_runs_alone_as_itself(net: Network, bits: list[tuple[int, int]]) -> None:
    graph = compile_graph(_export(net, bits))
    assert graph.layer_kernels == len(net.layers)
    assert graph.between(), "a compiled network always runs something between its layers (at least the classifier's flatten)"
    domains = [kernel_kind(op.key.split(",")[1].strip('"')) for op in graph.ops if op.kind != NODE]
    assert domains == [term_domain(b) for b in bits], "each layer's kernel, in layer order, of its policy's domain"
    for op in graph.ops:
        sess = ort.InferenceSession(op.model, providers=["CPUExecutionProvider"])
        sess.run(None, random_feeds(sess, 0))
        compiled = [n.op_type for n in optimized_graph(op.model, ort.GraphOptimizationLevel.ORT_ENABLE_ALL).graph.node]
        assert compiled == [op.key.split(",")[1].strip('"')], f"{op.key} was rewritten into {compiled}"
        assert op.kind == kernel_kind(compiled[0]) and (op.kind == NODE) == (compiled[0] not in LAYER_KERNELS)


def test_every_residual_add_is_priced_once_fused_into_a_float_conv_or_as_a_node_between_layers() -> None:
    """What a layer's single-layer entry cannot see: onnxruntime adds a residual inside the float
    conv's NCHWc kernel where the layouts allow (a fourth input), so that add is no node between
    layers; the conv's one-node model keeps it."""
    resnet = load_network("resnet20")
    names = [x.name for x in resnet.layers]
    for policy in (QuantPolicy.uniform(names, 32), QuantPolicy.uniform(names, 8)):
        graph = compile_graph(export_all(resnet, [policy])[0])
        fused = [op for op in graph.ops if op.kind == "float" and len([i for i in _node(op).input if i]) == 4]
        adds = [op for op in graph.between() if _node(op).op_type in ("Add", "Sum", "QLinearAdd")]
        assert len(fused) + len(adds) == 9, "ResNet-20's nine residual adds"


def _node(op: Any) -> onnx.NodeProto:
    return onnx.load_from_string(op.model).graph.node[0]


def test_domain_changes_show_as_quantize_and_dequantize_nodes(net: Network) -> None:
    def kinds(bits: list[tuple[int, int]]) -> list[str]:
        return [op.key.split(",")[1].strip('"') for op in compile_graph(_export(net, bits)).between()]

    mixed, floats = kinds([Q, F, Q]), kinds([F, F, F])
    assert "QuantizeLinear" in mixed and "DequantizeLinear" in mixed
    assert "QuantizeLinear" not in floats
    assert len(mixed) > len(floats)


def test_identical_nodes_share_a_key_across_compiles(net: Network) -> None:
    once, again = compile_graph(_export(net, [Q, F, Q])), compile_graph(_export(net, [Q, F, Q]))
    assert [op.key for op in once.ops] == [op.key for op in again.ops]


def test_an_uncompilable_model_is_one_export_error() -> None:
    from haq.export import ExportError

    with pytest.raises(ExportError, match="cannot compile"):
        compile_graph(b"not a model")


def test_parts_ms_takes_out_every_isolated_call_overhead_but_one() -> None:
    assert parts_ms(Parts(1.0, (1.0, 0.0, 0.0), ()), uniform(0.5)) == pytest.approx(1.0)
    # a float and an int8 layer (shares 0.9 + 0.8) and two nodes: 3.7 isolated calls, 2.7 overheads beyond the network's own
    two = Parts(2.0, (0.9, 0.8, 0.0), (0.01, 0.02))
    assert parts_ms(two, uniform(0.005)) == pytest.approx(2.03 - 0.005 * 2.7)
    # per kind: the network's own call is counted as a node's
    assert parts_ms(two, (0.001, 0.002, 0.003, 0.004)) == pytest.approx(2.03 - (0.9 * 0.001 + 0.8 * 0.002 + 1 * 0.004))
    with pytest.raises(ValueError, match="one value per kind"):
        parts_ms(two, (0.001, 0.002))
    with pytest.raises(ValueError, match="one sum per domain"):
        Parts(1.0, (1.0,), ())


def _rows(overhead: Sequence[float], seed: int, weight_only: bool = True) -> list[tuple[Parts, float]]:
    """Random configurations and the times ``overhead`` (per kind) would make them take."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(16):
        shares = tuple(float(x) for x in rng.uniform(0.0, 8.0, size=3) * (1.0, 1.0, float(weight_only)))
        parts = Parts(float(rng.uniform(0.1, 2.0)), shares, tuple(rng.uniform(0.005, 0.05, size=int(rng.integers(0, 30)))))
        rows.append((parts, parts_ms(parts, overhead)))
    return rows


@pytest.mark.parametrize("overhead", [(0.0, 0.0, 0.0, 0.0), (0.003, 0.002, 0.0045, 0.0037), (0.011, 0.0, 0.002, 0.006)])
def test_fit_overhead_recovers_the_overheads_per_kind_that_made_the_measurements(overhead: tuple[float, ...]) -> None:
    _, by_kind = fit_overhead(_rows(overhead, 1))
    assert by_kind == pytest.approx(overhead, abs=1e-10)


@pytest.mark.parametrize("overhead", [0.0, 0.003, 0.011])
def test_one_overhead_for_every_call_is_recovered_by_both_fits(overhead: float) -> None:
    pooled, by_kind = fit_overhead(_rows(uniform(overhead), 2))
    assert pooled == pytest.approx(overhead, abs=1e-12)
    assert by_kind == pytest.approx(uniform(overhead), abs=1e-10)


def test_a_kind_no_configuration_calls_takes_the_pooled_overhead() -> None:
    pooled, by_kind = fit_overhead(_rows((0.003, 0.002, 0.009, 0.004), 3, weight_only=False))
    assert by_kind[CALL_KINDS.index("weight-only")] == pooled
    assert by_kind[CALL_KINDS.index("int8")] == pytest.approx(0.002, abs=1e-10)


def test_the_bounded_overhead_keeps_every_configuration_priced_above_zero() -> None:
    rows = [
        Parts(0.02, (3.0, 0.0, 0.0), (0.006,) * 4),
        Parts(0.5, (4.0, 6.0, 0.0), (0.01,) * 40),
        Parts(0.01, (0.9, 0.0, 0.0), ()),  # pays less than one call
    ]
    asked = (0.01, 0.02, 0.0, 0.03)
    bounded, no_bytes, scaled = bounded_overhead(rows, asked)
    assert scaled and no_bytes == 0.0 and all(parts_ms(p, bounded) >= 0.05 * p.total() - 1e-15 for p in rows)
    assert min(parts_ms(p, bounded) / p.total() for p in rows) == pytest.approx(0.05)
    assert np.allclose(bounded, np.array(asked) * (bounded[0] / asked[0])), "every kind scaled alike"
    assert bounded_overhead(rows, uniform(1e-6)) == (uniform(1e-6), 0.0, False)
    with_bytes = [replace(p, out_bytes=1e6) for p in rows]
    bounded, per_byte, scaled = bounded_overhead(with_bytes, uniform(1e-6), 1e-7)  # 0.1 ms for a MB of output
    assert scaled and per_byte / 1e-7 == pytest.approx(bounded[0] / 1e-6), "the output cost scaled with the overhead"
    assert min(parts_ms(p, bounded, per_byte) / p.total() for p in with_bytes) == pytest.approx(0.05)


@pytest.mark.parametrize("per_byte", [0.0, 4.7e-9, 2e-8])
def test_the_overhead_is_fitted_with_the_timed_output_cost_taken_out(per_byte: float) -> None:
    rng = np.random.default_rng(4)
    rows = []
    for _ in range(16):
        calls = (0.01,) * int(rng.integers(2, 30))
        parts = Parts(float(rng.uniform(0.1, 2.0)), (3.0, 2.0, 0.0), calls, float(rng.uniform(0, 4e6)))
        rows.append((parts, parts_ms(parts, uniform(0.004), per_byte)))
    pooled, _ = fit_overhead(rows, per_byte)
    assert pooled == pytest.approx(0.004, abs=1e-12)
    if per_byte:
        assert abs(fit_overhead(rows)[0] - 0.004) > 1e-5, "left in, the output cost moves the overhead"
    assert parts_ms(rows[0][0], uniform(0.0), per_byte) == pytest.approx(rows[0][0].total() - per_byte * rows[0][0].out_bytes)


def test_the_timed_call_cost_is_the_overhead_at_no_output_and_its_slope_per_byte() -> None:
    small, _, large, _ = call_cost_models(8)
    level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sizes = [optimized_graph(m, level).graph.output[0].type.tensor_type.shape.dim[0].dim_value for m in (small, large)]
    assert sizes == [1, OUTPUT_PROBE]
    # overheads 0.0038 ms at 4 bytes and 0.0050 ms at 4 * OUTPUT_PROBE bytes; a node costs 1 µs in the chain
    times = [0.0038 + 0.001, 0.0038 + 0.008, 0.0050 + 0.001, 0.0050 + 0.008]
    fixed, per_byte = timed_call_cost(times, 8)
    assert per_byte == pytest.approx(0.0012 / (4 * (OUTPUT_PROBE - 1)))
    assert fixed + 4 * per_byte == pytest.approx(0.0038) and fixed + 4 * OUTPUT_PROBE * per_byte == pytest.approx(0.0050)
    assert timed_call_cost([0.005, 0.012, 0.004, 0.011], 8)[1] == 0.0, "never a negative cost per byte"
    with pytest.raises(ValueError, match="four call-cost models"):
        timed_call_cost([0.001], 8)


def test_fit_overhead_is_never_negative_and_needs_a_measurement() -> None:
    below = Parts(1.0, (3.0, 0.0, 0.0), (0.1,))
    assert fit_overhead([(below, 2.0)]) == (0.0, uniform(0.0))  # the parts are below the measurement: nothing to remove
    with pytest.raises(ValueError, match="at least one"):
        fit_overhead([])


def test_the_chain_keeps_its_nodes_and_the_overhead_is_the_one_node_time_less_a_node() -> None:
    one, chain = overhead_models(8)
    level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert len(optimized_graph(one, level).graph.node) == 1
    assert len(optimized_graph(chain, level).graph.node) == 8
    assert call_overhead(0.010, 0.017, 8) == pytest.approx(0.009)  # a node costs 1 µs inside a model
    assert call_overhead(0.001, 0.100, 8) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        call_overhead(0.01, 0.01, 1)


class _Recording:
    """A runner on this machine that keeps every model it is asked to time and times it the same
    on every run (4 µs a call plus 0.1 ns per byte of model), so that a fit on these times does not
    depend on how busy the machine is; the nodes themselves run in onnxruntime in the tests above."""

    def __init__(self) -> None:
        self.inner = LocalRunner(FAST)
        self.models: list[bytes] = []

    def measure_many(self, models: Sequence[bytes]) -> list[Measurement]:
        self.models += models
        return [Measurement(((0.004 + 1e-7 * len(m),) * 3,), (1,), (), 0.0) for m in models]

    def device_info(self) -> dict[str, Any]:
        return self.inner.device_info()


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parts") / "cpu.json"
    layers = [*model_layers("digits_cnn", None, None), *model_layers("digits_mlp", None, None)]
    extend_table(MeasuredBackend(FAST), [x.signature for x in layers], out, 1)
    return out


def test_a_fit_by_parts_times_no_network_whole_and_says_so_in_the_table(digits_table: Path, tmp_path: Path) -> None:
    net = load_network("digits_cnn")
    runner = _Recording()
    out, kept = tmp_path / "fitted.json", tmp_path / "kept.jsonl"
    fitted = fit_table(load_table(digits_table), [net], runner, 12, out, observations=kept, by_parts=["digits_cnn"])
    assert runner.models
    graphs = [[n.op_type for n in onnx.load_from_string(model).graph.node] for model in runner.models]
    for kinds in graphs:  # one-node models, the two call-overhead models and the probe: never two layers together
        assert len(kinds) == 1 or set(kinds) in ({"Relu"}, {"MatMul", "Relu"})
    timed = {kinds[0] for kinds in graphs if len(kinds) == 1}
    assert timed & {"Conv", "QLinearConv"} and timed & {"Gemm", "QGemm"}, "the layers' compiled kernels, each alone"
    assert timed - LAYER_KERNELS, "and the nodes between them"
    assert not kept.exists(), "configurations priced by parts are not whole-model measurements to keep"
    (own,) = fitted.data.graph.networks
    assert own.network == "digits_cnn" and own.priced_by == "parts" and own.fitted_on == 12
    saved = json.loads(out.read_text())
    assert saved["version"] == 8 and saved["graph"]["networks"][0]["priced_by"] == "parts"
    assert load_table(out).data.graph.networks[0].priced_by == "parts"
    policy = QuantPolicy.uniform([x.name for x in net.layers], 8)
    assert 0.0 < fitted.policy_cost(net.layers, policy) < 10 * layer_sum(fitted, net.layers, policy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=7), "priced by parts need version 8"),
        (lambda d: d["graph"]["networks"][0].update(priced_by="guess"), "must be one of measurement, parts"),
    ],
)
def test_a_bad_priced_by_is_one_line_naming_the_field(digits_table: Path, tmp_path: Path, edit: Any, message: str) -> None:
    table = load_table(digits_table)
    own = NetworkTerms("fp", "digits_cnn", 12, priced_by="parts")
    data = json.loads(json.dumps(table.with_graph(GraphExtras(networks=(own,))).data.to_dict()))
    assert data["version"] == 8
    edit(data)
    assert re.search(message, load_error(data, tmp_path / "bad.json"))


def test_a_network_priced_by_parts_beside_one_measured_whole_takes_its_overhead_from_that_one(
    digits_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cnn, mlp = load_network("digits_cnn"), load_network("digits_mlp")
    runner = _Recording()
    exports: list[str] = []

    def counted(net: Network, policies: Sequence[QuantPolicy], log: Any = None, weights: str = "uint8") -> list[bytes]:
        exports.extend(net.name for _ in policies)
        return export_all(net, policies, log, weights)

    monkeypatch.setattr(fit, "export_all", counted)
    out, kept = tmp_path / "fitted.json", tmp_path / "kept.jsonl"
    logged: list[str] = []
    fitted = fit_table(
        load_table(digits_table), [mlp, cnn], runner, 12, out, log=logged.append, observations=kept, by_parts=["digits_cnn"]
    )
    convs = {"Conv", "FusedConv", "QLinearConv"}
    nodes = [{n.op_type for n in onnx.load_from_string(m).graph.node} for m in runner.models]
    assert not any(convs & kinds and len(kinds) > 1 for kinds in nodes), "the conv network was timed whole"
    graphs = [[n.op_type for n in onnx.load_from_string(m).graph.node] for m in runner.models]
    assert any(len(g) > 2 and {"Gemm", "MatMul", "MatMulNBits"} & set(g) for g in graphs), "the MLP was not timed whole"
    assert any("fitted on 12 whole-model measurements of digits_mlp" in line for line in logged)
    assert {n.network: n.priced_by for n in fitted.data.graph.networks} == {"digits_cnn": "parts", "digits_mlp": "measurement"}
    assert len(kept.read_text().splitlines()) == 13, "the header and the MLP's 12 measurements, nothing of the parts"
    assert exports.count("digits_mlp") == 12, "a configuration timed whole is priced by parts from the same export"


def _call_line(logged: Sequence[str]) -> str:
    (line,) = [x for x in logged if x.startswith("call overhead of an isolated model")]
    return line


def test_the_overhead_fitted_beside_a_measured_network_is_kept_for_a_later_fit_by_parts_alone(
    digits_table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cnn, mlp = load_network("digits_cnn"), load_network("digits_mlp")
    by_parts = ["digits_cnn"]
    first: list[str] = []
    fitted = fit_table(
        load_table(digits_table), [mlp, cnn], _Recording(), 12, tmp_path / "a.json", log=first.append, by_parts=by_parts
    )
    call = fitted.data.graph.parts_call
    assert call is not None and call.fitted_on == ("digits_mlp",) and call.measurements == 12
    assert call.layers == "kernels" and call.by_kind is None, "one overhead for every call, fitted on parts by kernels"
    assert call.latency_ms == pytest.approx(0.004, rel=0.05), "the recording runner's 4 µs a call"
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["version"] == 11 and saved["graph"]["parts_call"]["latency_ms"] == call.latency_ms
    assert saved["graph"]["parts_call"]["layers"] == "kernels"
    assert saved["graph"]["parts_call"]["latency_ms_per_output_byte"] == call.per_byte_ms >= 0.0
    assert load_table(tmp_path / "a.json").data.graph.parts_call == call
    from haq.cli import main

    assert main(["tables", "show", str(tmp_path / "a.json")]) == 0
    shown = capsys.readouterr().out
    said = (
        f"call overhead by parts {1000 * call.latency_ms:.2f} µs and {1024e6 * call.per_byte_ms:.1f} ns per KiB of output, "
        "layers by their kernels (fitted on 12 whole-model"
    )
    assert said in shown

    alone, later = _Recording(), []
    refitted = fit_table(
        load_table(tmp_path / "a.json"), [cnn], alone, 12, tmp_path / "b.json", log=later.append, by_parts=by_parts
    )
    assert "kept in the table, fitted on 12 whole-model measurements of digits_mlp" in _call_line(later)
    assert _call_line(later).split(";")[0] == _call_line(first).split(";")[0]  # the same overheads, in µs
    assert not set(overhead_models()) & set(alone.models), "the call-overhead models were timed, not used"
    assert refitted.data.graph.parts_call == call

    timed: list[str] = []
    fit_table(load_table(digits_table), [cnn], _Recording(), 12, tmp_path / "c.json", log=timed.append, by_parts=by_parts)
    assert "timed (no network measured whole beside it, none kept in the table)" in _call_line(timed)

    by_entries = replace(call, latency_ms=0.001, by_kind=(0.001, 0.002, 0.003, 0.004), layers="entries", per_byte_ms=0.0)
    older, retimed, logged = tmp_path / "older.json", _Recording(), []
    load_table(digits_table).with_graph(GraphExtras(parts_call=by_entries)).save(older)
    fit_table(load_table(older), [cnn], retimed, 12, tmp_path / "d.json", log=logged.append, by_parts=by_parts)
    assert "timed (the one kept in the table was fitted on layers priced by their entries" in _call_line(logged)
    assert set(overhead_models()) <= set(retimed.models), "an overhead fitted on other parts is not reused"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=8), "'graph.parts_call': needs version 9"),
        (lambda d: d["graph"]["parts_call"].update(fitted_on=[]), "must name the networks measured whole"),
        (lambda d: d["graph"]["parts_call"].update(measurements=0), "parts_call.measurements': must be >= 1"),
        (lambda d: d["graph"]["parts_call"].update(latency_ms=-1.0), "parts_call.latency_ms': must be >= 0"),
        (lambda d: d["graph"]["parts_call"].update(guess=1), "is not part of the format"),
    ],
)
def test_a_bad_parts_call_is_one_line_naming_the_field(digits_table: Path, tmp_path: Path, edit: Any, message: str) -> None:
    table = load_table(digits_table).with_graph(GraphExtras(parts_call=PartsCall(0.004, ("digits_mlp",), 12)))
    data = json.loads(json.dumps(table.data.to_dict()))
    assert data["version"] == 9
    edit(data)
    assert re.search(message, load_error(data, tmp_path / "bad.json"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=9), "'graph.parts_call.by_kind': needs version 10"),
        (lambda d: d["graph"]["parts_call"]["by_kind"].pop("node"), "parts_call.by_kind.node': is missing"),
        (lambda d: d["graph"]["parts_call"]["by_kind"].update(pool=0.001), "by_kind.pool': is not part of the format"),
        (lambda d: d["graph"]["parts_call"]["by_kind"].update(int8=-1.0), "by_kind.int8': must be >= 0"),
        (lambda d: d["graph"]["parts_call"].update(by_kind=[0.001] * 4), "by_kind': must be a JSON object"),
        (lambda d: d["graph"]["parts_call"].update(layers="kernels"), "'graph.parts_call.layers': needs version 11"),
        (lambda d: d.update(version=11) or d["graph"]["parts_call"].update(layers="nodes"), "must be one of entries, kernels"),
    ],
)
def test_bad_overheads_per_kind_are_one_line_naming_the_field(
    digits_table: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    call = PartsCall(0.004, ("digits_mlp",), 12, (0.003, 0.0025, 0.0044, 0.0037))
    data = json.loads(json.dumps(load_table(digits_table).with_graph(GraphExtras(parts_call=call)).data.to_dict()))
    assert data["version"] == 10
    (tmp_path / "good.json").write_text(json.dumps(data))
    assert load_table(tmp_path / "good.json").data.graph.parts_call == call
    edit(data)
    assert re.search(message, load_error(data, tmp_path / "bad.json"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(version=10), "'graph.parts_call.layers': needs version 11"),
        (lambda d: d["graph"]["parts_call"].update(latency_ms_per_output_byte=-1e-9), "output_byte': must be >= 0"),
        (lambda d: d["graph"]["parts_call"].update(layers="entries"), "output_byte': belongs to parts priced by kernels"),
    ],
)
def test_a_bad_call_cost_by_kernels_is_one_line_naming_the_field(
    digits_table: Path, tmp_path: Path, edit: Any, message: str
) -> None:
    call = PartsCall(0.004, ("digits_mlp",), 12, layers="kernels", per_byte_ms=4.7e-9)
    data = json.loads(json.dumps(load_table(digits_table).with_graph(GraphExtras(parts_call=call)).data.to_dict()))
    assert data["version"] == 11
    (tmp_path / "good.json").write_text(json.dumps(data))
    assert load_table(tmp_path / "good.json").data.graph.parts_call == call
    edit(data)
    assert re.search(message, load_error(data, tmp_path / "bad.json"))


def test_by_parts_naming_a_model_not_fitted_is_one_line(digits_table: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from haq.cli import main

    code = main(["tables", "fit", "--model", "digits_mlp", "--device", str(digits_table), "--by-parts", "resnet20"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--by-parts names resnet20, which --model does not" in err and "\n" not in err


def test_a_configuration_priced_by_parts_is_blended_with_the_device_terms_by_the_geometric_mean(digits_table: Path) -> None:
    table, cnn = load_table(digits_table), load_network("digits_cnn")
    policies = [QuantPolicy.uniform([x.name for x in cnn.layers], b) for b in (8, 32)]
    priced = [fit.observe(table, cnn, p, 4.0 * layer_sum(table, cnn.layers, p)) for p in policies]
    blended = fit.blend_with_terms(priced, table, [cnn])
    for before, after, p in zip(priced, blended, policies):
        assert after.measured_ms == pytest.approx(2.0 * layer_sum(table, cnn.layers, p)), "sqrt(4 S * S)"
        assert (after.network, after.bits, after.layer_sum_ms) == (before.network, before.bits, before.layer_sum_ms)

    class Unpriced:
        def policy_cost(self, layers: Any, policy: Any) -> float:
            return 0.0

    assert fit.blend_with_terms(priced, Unpriced(), [cnn]) == priced, "no reference price: the parts price stands"  # type: ignore[arg-type]


def test_a_fit_by_parts_blends_only_when_asked_and_where_a_network_was_measured_whole(
    digits_table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    real = fit.blend_with_terms

    def spy(priced: Any, reference: Any, nets: Sequence[Network]) -> Any:
        calls.append(sorted({o.network for o in priced}))
        graph = reference.data.graph
        assert {n.network for n in (*graph.networks, *graph.corrections)} == {"digits_mlp"}, "fitted on the MLP alone"
        return real(priced, reference, nets)

    monkeypatch.setattr(fit, "blend_with_terms", spy)
    cnn, mlp = load_network("digits_cnn"), load_network("digits_mlp")
    table = load_table(digits_table)
    fit_table(table, [cnn], _Recording(), 12, tmp_path / "alone.json", by_parts=["digits_cnn"], blend=True)
    assert calls == [], "nothing measured whole: no device terms to blend with"
    fit_table(table, [mlp, cnn], _Recording(), 12, tmp_path / "beside.json", by_parts=["digits_cnn"])
    assert calls == [], "not asked for: the parts prices stand"
    fit_table(table, [mlp, cnn], _Recording(), 12, tmp_path / "blended.json", by_parts=["digits_cnn"], blend=True)
    assert calls == [["digits_cnn"]]


@pytest.mark.parametrize("models", [["digits_mlp"], ["digits_mlp", "digits_cnn"]])
def test_blending_with_no_model_measured_whole_beside_one_by_parts_is_one_line(
    digits_table: Path, capsys: pytest.CaptureFixture[str], models: list[str]
) -> None:
    from haq.cli import main

    by_parts = ["--by-parts", *models] if len(models) > 1 else []
    code = main(["tables", "fit", "--model", *models, "--device", str(digits_table), *by_parts, "--blend-with-terms"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--blend-with-terms blends prices by parts" in err and "\n" not in err


def test_a_fit_times_the_entries_again_beside_the_whole_models_unless_it_reuses_measurements(
    digits_table: Path, tmp_path: Path
) -> None:
    built = load_table(digits_table)
    mlp = load_network("digits_mlp")
    runner = _Recording()
    out, kept = tmp_path / "fitted.json", tmp_path / "kept.jsonl"
    fitted = fit_table(built, [mlp], runner, 12, out, observations=kept)
    mine = {
        (e.key, e.w_bits, e.a_bits)
        for layer in mlp.layers
        for e in [built.entry(layer.signature, *b) for b in built.supported_bits(layer.signature)]
    }
    timed = {len(m) for m in runner.models}
    retimed = 0
    for before, after in zip(built.entries(), load_table(out).entries()):
        if (before.key, before.w_bits, before.a_bits) not in mine:
            assert after == before, "an entry of no network in the fit is left as built"
            continue
        retimed += 1
        isolated = after.extra["isolated_ms"]
        assert after.extra["build_isolated_ms"] == pytest.approx(before.extra["isolated_ms"])
        assert round((isolated - 0.004) / 1e-7) in timed, "timed again in the fit's batch"
        assert after.latency_ms == pytest.approx(isolated * before.extra["kernel_share"]), "the build's kernel share kept"
    assert retimed == len(mine) > 0 and len(mine) < len(built.data.entries)
    assert fitted.data.entries == load_table(out).data.entries
    again = _Recording()
    refit = fit_table(fitted, [mlp], again, 12, tmp_path / "refit.json", observations=kept)
    assert len(again.models) == 1, "every whole model reused: only the probe is timed, no entry"
    assert refit.data.entries == fitted.data.entries
