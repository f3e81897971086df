"""Measured CPU tables: the builder, the graph-aware fit, the check statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from haq.core.errors import ConfigError, InternalError, PolicyError, TableError
from haq.hardware.accuracy import accuracy, rmspe, spearman, within
from haq.hardware.build import extend_table
from haq.hardware.check import check_table, load_check, score
from haq.hardware.device.machine import machine_fingerprint
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.fit import fit_table
from haq.hardware.fit_observations import load_observations, observations_path, runner_identity, save_observations
from haq.hardware.graph_fit import (
    DIRECTIONS,
    SCALE_BOUNDS,
    DeviceFit,
    Observation,
    boundary_features,
    fit_correction,
    fit_device,
)
from haq.hardware.measured import MeasuredBackend, cpu_slug
from haq.hardware.networks import load_network, model_layers, policy_of, sample_policies, supported_pairs
from haq.quant import LayerBits, LayerSignature, QuantPolicy
from haq.tables.schema import Correction, GraphExtras, network_fingerprint
from haq.tables.table import CostTable, load_table, save_table

FAST = ProtocolConfig(sessions=1, warmup_runs=2, warmup_s=0.0, batch_warmup_s=0.0, repeats=3, min_repeat_ms=0.2, max_retries=0)


@pytest.fixture(scope="module")
def digits_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fast-protocol measured table of digits_cnn (the numbers are noisy; the structure is real)."""
    out = tmp_path_factory.mktemp("tables") / "cpu.json"
    extend_table(
        MeasuredBackend(FAST),
        [layer.signature for layer in model_layers("digits_cnn", None, None)],
        out,
        1,
        models=["digits_cnn"],
    )
    return out


def test_builder_records_real_kernels_only(digits_table: Path) -> None:
    table = load_table(digits_table)
    assert table.device == cpu_slug()
    by_pair: dict[tuple[int, int], set[str]] = {}
    for e in table.entries():
        assert e.source == "measured" and e.samples >= 1 and e.latency_ms > 0
        assert len(e.raw_ms) == e.samples
        share = e.extra["kernel_share"]
        assert 0.0 < share <= 1.0 and e.latency_ms == pytest.approx(e.extra["isolated_ms"] * share, rel=1e-3)
        by_pair.setdefault((e.w_bits, e.a_bits), set()).add(e.kernel)
    # conv layers: fp32 and W8A8 only; the linear head adds weight-only 2/4/8 via MatMulNBits
    assert set(by_pair) == {(32, 32), (8, 8), (2, 32), (4, 32), (8, 32)}
    assert by_pair[(8, 8)] <= {"QLinearConv", "com.microsoft:QGemm"}
    assert by_pair[(4, 32)] == {"com.microsoft:MatMulNBits"}
    assert not any("Quant" in k for k in by_pair[(32, 32)])
    layers = model_layers("digits_cnn", None, None)
    assert table.supported_bits(layers[0].signature) == [(8, 8), (32, 32)]


def test_existing_signatures_are_not_measured_again(digits_table: Path) -> None:
    before = digits_table.read_text()
    entries_before = load_table(digits_table).data.entries
    report = extend_table(
        MeasuredBackend(FAST),
        [layer.signature for layer in model_layers("digits_cnn", None, None)],
        digits_table,
        1,
        models=["digits_cnn"],
    )
    assert report.added == 0 and report.kept == 4
    assert load_table(digits_table).data.entries == entries_before
    assert len(digits_table.read_text()) >= len(before) - 64  # only the 'updated' stamp may change


def test_batch_other_than_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="batch 1"):
        MeasuredBackend(FAST).metadata(4)


def test_fit_and_check_end_to_end(digits_table: Path, tmp_path: Path) -> None:
    table = load_table(digits_table)
    net = load_network("digits_cnn")
    runner = LocalRunner(FAST)
    fitted = fit_table(table, [net], runner, 5, tmp_path / "fitted.json")
    g = load_table(tmp_path / "fitted.json").data.graph
    assert len(g.corrections) == 1 and g.corrections[0].network == "digits_cnn" and g.corrections[0].fitted_on == 5
    assert all(t.networks == ("digits_cnn",) and t.fitted_on == 5 for t in g.layer_terms)
    assert {(r.src, r.dst) for r in g.rules} >= {((32, 32), (8, 8)), ((8, 8), (32, 32))}
    report = check_table(fitted, net, runner, 3)
    assert report.graph_aware and report.naive.n == report.graph.n == report.retest.n == 3
    assert "noise ceiling" in report.markdown()


TRUTH = {"float->int8": (0.0, 6e-6), "int8->float": (0.0, 3e-6)}  # boundaries are priced per element


INT8_LAYER_MS = 0.003


def _synthetic_observations(
    layers: list, n: int, seed: int, scale: float, offset: float, noise: float = 0.0
) -> list[Observation]:
    """Whole-model times from made-up layer costs, known boundary costs (:data:`TRUTH`) and a
    known cost per int8 layer (:data:`INT8_LAYER_MS`)."""
    rng = np.random.default_rng(seed)
    costs = {(32, 32): 0.02, (8, 8): 0.008}
    out = []
    for _ in range(n):
        bits = tuple((8, 8) if rng.random() < 0.5 else (32, 32) for _ in layers)
        layer_sum = sum(costs[b] * (1 + i % 3) for i, b in enumerate(bits))
        f = boundary_features(layers, bits)
        per_dir = f.reshape(len(DIRECTIONS), -1, 2).sum(axis=1)  # [count, elements] per direction, over consumer ops
        boundary = sum(TRUTH[d][0] * per_dir[k, 0] + TRUTH[d][1] * per_dir[k, 1] for k, d in enumerate(DIRECTIONS))
        boundary += INT8_LAYER_MS * sum(b == (8, 8) for b in bits)
        out.append(
            Observation(
                "digits_cnn",
                "fp",
                layer_sum,
                bits,
                (scale * (layer_sum + boundary) + offset) * (1 + noise * rng.standard_normal()),
            )
        )
    return out


def test_boundary_fit_recovers_known_costs_at_scale_one() -> None:
    layers = load_network("digits_cnn").layers
    fit = fit_device(_synthetic_observations(layers, 16, 0, 1.0, 0.0), {"digits_cnn": layers}, form="int8 fixed+out")
    assert fit.layer_terms["int8"][0] == pytest.approx(INT8_LAYER_MS, rel=0.05)
    for d in DIRECTIONS:
        got = fit.per_direction[d][0] + fit.per_direction[d][1] * 1024  # fixed + per-elem at a 1024-element boundary
        want = TRUTH[d][0] + TRUTH[d][1] * 1024
        assert got == pytest.approx(want, rel=0.05)


def test_fit_cannot_trade_layer_costs_for_an_offset() -> None:
    """The degenerate fit: layer sums shrunk to ~0 and a big offset. Scale stays in bounds, boundaries stay sane."""
    layers = load_network("digits_cnn").layers
    obs = _synthetic_observations(layers, 12, 1, 0.5, 0.05, noise=0.03)  # layer costs 2x too high, noisy
    fit = fit_device(obs, {"digits_cnn": layers})
    for d in DIRECTIONS:
        assert fit.per_direction[d][0] + fit.per_direction[d][1] * 1024 < 10 * (TRUTH[d][0] + TRUTH[d][1] * 1024)
    raw = [o.layer_sum_ms + fit.cost(layers, o.bits) for o in obs]
    c = fit_correction(raw, [o.measured_ms for o in obs], "digits_cnn", "fp")
    assert SCALE_BOUNDS[0] <= c.scale <= SCALE_BOUNDS[1]
    with pytest.raises(TableError, match="scale bounds"):
        fit_correction(raw, [o.measured_ms for o in obs], "digits_cnn", "fp", scale_bounds=(1.2, 2.0))


def test_boundary_rules_make_policy_cost_graph_aware(digits_table: Path) -> None:
    table = load_table(digits_table)
    layers = load_network("digits_cnn").layers
    names = [layer.name for layer in layers]
    fit = DeviceFit(TRUTH, {"int8": (INT8_LAYER_MS, 0.0, 0.0)}, ("digits_cnn",), 5)
    priced = table.with_graph(GraphExtras((), tuple(fit.rules([(32, 32), (8, 8)])), ()))
    mixed = QuantPolicy({n: LayerBits(*((8, 8) if i % 2 else (32, 32))) for i, n in enumerate(names)})
    uniform = QuantPolicy.uniform(names, 8)
    naive_mixed = sum(priced.layer_cost(layer.signature, *((8, 8) if i % 2 else (32, 32))) for i, layer in enumerate(layers))
    assert priced.policy_cost(layers, mixed) > naive_mixed * 1.01
    assert priced.policy_cost(layers, uniform) == pytest.approx(sum(priced.layer_cost(layer.signature, 8, 8) for layer in layers))
    fp = network_fingerprint(layers, table.batch)
    corrected = priced.with_graph(
        GraphExtras((), priced.data.graph.rules, (Correction(fp, "digits_cnn", "latency", 1.1, 0.01, 5),), fit.terms())
    )
    int8_sum = sum(priced.layer_cost(layer.signature, 8, 8) for layer in layers)
    assert corrected.policy_cost(layers, uniform) == pytest.approx(1.1 * (int8_sum + INT8_LAYER_MS * len(layers)) + 0.01)
    assert corrected.cost_range(layers)[0] <= corrected.policy_cost(layers, uniform)
    reloaded = load_table(_saved(corrected, digits_table.parent / "corrected.json"))
    assert reloaded.data.graph.layer_terms == fit.terms()
    assert reloaded.data.to_dict()["version"] == 3


def _saved(table: CostTable, path: Path) -> Path:
    save_table(table.data, path)
    return path


def test_fit_observations_file_round_trips_and_rejects_garbage(digits_table: Path, tmp_path: Path) -> None:
    table = load_table(digits_table)
    known = {("fp", ((32, 32), (8, 8))): 0.25, ("fp", ((8, 8), (8, 8))): 0.125}
    path = observations_path(tmp_path / "cpu.json")
    assert path.name == "cpu.fit.jsonl"
    save_observations(path, table, known, "machine-a")
    assert load_observations(path, table, "machine-a") == known
    assert load_observations(path, table, "machine-b") == {}  # taken on another machine: measured again
    path.write_text(path.read_text().replace("0.125", "NaN"))
    with pytest.raises(TableError, match="malformed"):
        load_observations(path, table, "machine-a")
    path.write_text("not json\n")
    with pytest.raises(TableError, match="delete it to re-measure"):
        load_observations(path, table, "machine-a")


def test_table_records_this_machine_and_fit_refuses_another(digits_table: Path, tmp_path: Path) -> None:
    table = load_table(digits_table)
    record = table.meta["machine"]
    assert record["identity"] == machine_fingerprint(probe=False).identity and record["probe_ms"] > 0
    assert runner_identity(LocalRunner(FAST)) == record["identity"]
    raw = json.loads(digits_table.read_text())
    raw["meta"]["machine"]["model"] = "not this one"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    with pytest.raises(TableError, match="fit it where it was built"):
        fit_table(load_table(other), [load_network("digits_cnn")], LocalRunner(FAST), 3, tmp_path / "fitted.json")


def test_sample_policies_draw_only_supported_pairs(digits_table: Path) -> None:
    table = load_table(digits_table)
    layers = model_layers("digits_cnn", None, None)
    supported = supported_pairs(table, layers)
    a = sample_policies(layers, supported, 8, seed=3)
    assert [p.to_dict()["layers"] for p in a] == [p.to_dict()["layers"] for p in sample_policies(layers, supported, 8, seed=3)]
    for p in a:
        for layer, s in zip(layers, supported):
            assert (p[layer.name].w_bits, p[layer.name].a_bits) in s


def test_check_statistics_on_hand_made_numbers() -> None:
    meas = [1.0, 2.0, 4.0, 10.0]
    pred = [1.04, 2.16, 3.0, 10.0]  # +4 %, +8 %, -25 %, 0 %
    assert within(pred, meas, 0.05) == 0.5
    assert within(pred, meas, 0.10) == 0.75
    assert rmspe(pred, meas) == pytest.approx(np.sqrt((0.04**2 + 0.08**2 + 0.25**2) / 4))
    assert spearman(pred, meas) == pytest.approx(1.0)
    assert spearman([4.0, 3.0, 2.0, 1.0], meas) == pytest.approx(-1.0)
    assert np.isnan(spearman([1.0] * 4, meas))
    acc = accuracy(pred, meas)
    assert acc.n == 4 and acc.within10 == 0.75
    with pytest.raises(InternalError, match="equal-length"):
        within([1.0], meas, 0.1)
    with pytest.raises(InternalError, match="finite"):
        rmspe([1.0, float("nan"), 1.0, 1.0], meas)


def test_correction_fit_recovers_affine_map_within_bounds() -> None:
    raw = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    c = fit_correction(raw, 1.2 * raw + 0.2, "net", "fp")
    assert c.scale == pytest.approx(1.2) and c.offset == pytest.approx(0.2)
    assert c.fitted_on == 5
    flat = fit_correction(raw, raw + 0.3, "net", "fp")  # no slope in the data: offset-only wins
    assert flat.scale == 1.0 and flat.offset == pytest.approx(0.3)
    steep = fit_correction(raw, 3.0 * raw, "net", "fp")  # a slope the bounds do not allow is clipped
    assert steep.scale == pytest.approx(SCALE_BOUNDS[1])
    # the network's cheapest configuration (raw 0.1 ms) is corrected to at least the floor (0.5 ms)
    for meas in (raw + 0.3, 1.2 * raw + 0.2):
        free = fit_correction(raw, meas, "net", "fp")
        floored = fit_correction(raw, meas, "net", "fp", cheapest=(0.1, 0.5))
        assert free.scale * 0.1 + free.offset < 0.5 <= floored.scale * 0.1 + floored.offset + 1e-9
        assert fit_correction(raw, meas, "net", "fp", cheapest=(0.1, 0.01)) == free  # a floor that holds changes nothing


def test_single_layer_signatures_round_trip() -> None:
    from haq.hardware.measured import export_single

    sig = LayerSignature("dwconv", 8, 8, (3, 3), (2, 2), (1, 1), 8, 8, 8, False)
    exported, info = export_single(sig, 8, 8)
    assert info.signature == sig and exported.kernels[info.name].precision == "w8a8"


def test_score_judges_a_table_on_saved_measurements(digits_table: Path, tmp_path: Path) -> None:
    """A saved check is re-scored without timing anything; a malformed one is a one-line TableError."""
    table = load_table(digits_table)
    net = load_network("digits_cnn")
    policies = sample_policies(net.layers, supported_pairs(table, net.layers), 4, seed=5)
    bits = [tuple((p[layer.name].w_bits, p[layer.name].a_bits) for layer in net.layers) for p in policies]
    twice = [(table.policy_cost(net.layers, p) * 1.02, table.policy_cost(net.layers, p) * 0.98) for p in policies]
    report = score(table, net, bits, twice)
    assert report.graph.within5 == 1.0 and report.bits == tuple(bits)
    saved = tmp_path / "check.json"
    saved.write_text(json.dumps(report.to_dict()))
    assert score(table, net, *load_check(saved, "digits_cnn")) == report
    with pytest.raises(TableError, match="holds 'digits_cnn', not 'resnet20'"):
        load_check(saved, "resnet20")
    with pytest.raises(TableError, match=">= 3 policies"):
        score(table, net, bits[:2], twice[:2])
    with pytest.raises(PolicyError, match="bits for 1 layers"):
        policy_of(net.layers, bits[0][:1])
    with pytest.raises(ConfigError, match="n must be an integer >= 3"):
        check_table(table, net, LocalRunner(FAST), 2)
