"""Device terms that travel: fitted over several networks, they price a network never measured
whole; the timing loop is round-robin and stops early only once an interval is tight."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from table_fakes import NETS, TRUTH, fake_table, plain_networks
from torch import nn

from haq.core.errors import TableError
from haq.hardware.device import timing
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models, settled
from haq.hardware.fit import cheapest_configuration, fit_graph, layer_sum
from haq.hardware.graph_fit import DEFAULT_FORM, FLOOR_SLACK, FORMS, DeviceFit, Observation, fit_device, fit_set
from haq.hardware.networks import Network, policy_of
from haq.quant import discover_layers
from haq.tables.schema import GraphExtras, RunOverhead, network_family
from haq.tables.table import CostTable, load_table

OVERHEAD = RunOverhead("latency", 0.002, 0.005)
PROBE = RunOverhead("latency", 0.0, 0.005)  # what measure_all hands the fit: the bound only


@pytest.fixture(scope="module")
def nets() -> list[Network]:
    return plain_networks()


def _observe(
    table: CostTable, net: Network, n: int, seed: int, noise: float = 0.0, truth: DeviceFit = TRUTH
) -> list[Observation]:
    """Whole-model times generated from ``truth`` and :data:`OVERHEAD` on top of the table's entries."""
    rng = np.random.default_rng(seed)
    bare = table.with_graph(GraphExtras(run_overhead=OVERHEAD))
    out = []
    for _ in range(n):
        bits = tuple((8, 8) if rng.random() < 0.5 else (32, 32) for _ in net.layers)
        s = layer_sum(table, net.layers, policy_of(net.layers, bits))
        overhead = OVERHEAD.latency_ms * (1 - len(net.layers))  # entries have no kernel share: each loses it all
        assert bare.policy_cost(net.layers, policy_of(net.layers, bits)) == pytest.approx(s + overhead)
        t = (s + overhead + truth.cost(net.layers, bits)) * (1 + noise * rng.standard_normal())
        out.append(Observation(net.name, "fp-" + net.name, s, bits, t))
    return out


def test_known_device_terms_are_recovered(nets: list[Network]) -> None:
    table = fake_table(nets)
    obs = [o for i, net in enumerate(nets) for o in _observe(table, net, 14, i)]
    weight = {net.name: len(net.layers) - 1.0 for net in nets}  # entries without a kernel share hold a whole overhead
    obs = [replace(o, overhead_weight=weight[o.network]) for o in obs]
    fit = fit_device(obs, {net.name: net.layers for net in nets}, form="int8 fixed+out", max_overhead_ms=PROBE.probe_ms)
    assert fit.run_overhead_ms == pytest.approx(OVERHEAD.latency_ms, rel=1e-3)
    for net in nets:
        for o in _observe(table, net, 5, 99):
            assert fit.cost(net.layers, o.bits) == pytest.approx(TRUTH.cost(net.layers, o.bits), rel=1e-3, abs=1e-6)
    assert fit.networks == tuple(sorted(NETS)) and fit.fitted_on == len(obs)


def test_noisy_fit_stays_close_and_picks_a_form_by_leaving_networks_out(nets: list[Network]) -> None:
    table = fake_table(nets)
    obs = [o for i, net in enumerate(nets) for o in _observe(table, net, 14, i, noise=0.01)]
    fitted = fit_graph(table, nets, obs, PROBE, corrected=())
    assert fitted.data.graph.layer_terms[0].networks == tuple(sorted(NETS)) and not fitted.data.graph.corrections
    for net in nets:
        o = _observe(table, net, 10, 7)
        pred = [fitted.policy_cost(net.layers, policy_of(net.layers, x.bits)) for x in o]
        errs = np.array(pred) / np.array([x.measured_ms for x in o]) - 1
        assert float(np.sqrt(np.mean(np.square(errs)))) < 0.03
    assert fit_device(obs, {net.name: net.layers for net in nets}, "auto").form in FORMS
    with pytest.raises(TableError, match="unknown device-term form"):
        fit_device(obs, {net.name: net.layers for net in nets}, "int4 everything")


def test_a_network_left_out_is_priced_by_the_device_terms(nets: list[Network], tmp_path: Path) -> None:
    table = fake_table(nets)
    measured, left_out = nets[:3], nets[3]
    obs = [o for i, net in enumerate(measured) for o in _observe(table, net, 14, i)]
    corrected = fit_graph(table, measured, obs, PROBE, form="int8 out").data.graph
    assert {c.network for c in corrected.corrections} | {n.network for n in corrected.networks} == {"a", "b", "c"}
    fitted = fit_graph(table, measured, obs, PROBE, form="int8 out", corrected=())
    fitted_overhead = fitted.data.graph.run_overhead
    assert fitted_overhead is not None and fitted_overhead.latency_ms == pytest.approx(OVERHEAD.latency_ms, rel=1e-6)
    assert fitted.data.to_dict()["version"] == 3
    fitted.save(tmp_path / "v3.json")
    assert load_table(tmp_path / "v3.json").data == fitted.data
    compiled = fitted.compile(left_out.layers)
    assert compiled.correction() is None
    for o in _observe(table, left_out, 8, 42):
        assert fitted.policy_cost(left_out.layers, policy_of(left_out.layers, o.bits)) == pytest.approx(o.measured_ms, rel=1e-3)
    fast, slow = fitted.cost_range(left_out.layers)
    assert fast <= fitted.policy_cost(left_out.layers, policy_of(left_out.layers, [(8, 8)] * len(left_out.layers))) <= slow


def _separable(widths: tuple[int, ...]) -> nn.Module:
    """A 3x3 stem, then depthwise 3x3 + pointwise 1x1 pairs (MobileNet-like), then a classifier."""
    mods: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), nn.ReLU()]
    for a, b in zip(widths, widths[1:]):
        mods += [nn.Conv2d(a, a, 3, padding=1, groups=a), nn.ReLU(), nn.Conv2d(a, b, 1), nn.ReLU()]
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


@pytest.fixture(scope="module")
def separable() -> list[Network]:
    """Two MobileNet-like networks of different widths and inputs."""
    out = []
    for name, widths, shape in (("e", (8, 16, 24), (3, 16, 16)), ("f", (16, 16, 16, 16), (3, 32, 32))):
        model = _separable(widths).eval()
        out.append(Network(name, model, discover_layers(model, shape), shape, torch.zeros((1, *shape))))
    return out


OP_TRUTH = DeviceFit(  # the int8 per-output cost only dense kxk convs pay (what MobileNetV2 showed)
    {"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)},
    {"int8": (0.0, 0.0, 0.0), "float": (0.0, 0.0, 0.0)},
    op_terms={("int8", "conv"): (0.0, 0.0, 4e-6)},
)
OP_FORM = "int8 fixed+out by op, float out, weight-only fixed"


def test_op_dependent_costs_are_recovered_by_the_op_form_only(
    nets: list[Network], separable: list[Network], tmp_path: Path
) -> None:
    """Separable nets left out of a fit on dense ones: the op form prices them exactly, the
    per-domain default form puts dense-conv costs on their layers. Fitted on all, the op form
    recovers the terms; the default form cannot fit dense and separable nets at once (one set of
    terms for both families: ``by_family=False``)."""
    every = [*nets, *separable]
    table = fake_table(every)
    obs = [o for i, net in enumerate(every) for o in _observe(table, net, 14, i, truth=OP_TRUTH)]
    check = {net.name: _observe(table, net, 10, 5, truth=OP_TRUTH) for net in every}

    def rmspe(fitted: CostTable, net: Network) -> float:
        pred = [fitted.policy_cost(net.layers, policy_of(net.layers, o.bits)) for o in check[net.name]]
        return float(np.sqrt(np.mean(np.square(np.array(pred) / np.array([o.measured_ms for o in check[net.name]]) - 1))))

    dense = [o for o in obs if o.network in NETS]
    for form, low, high in ((OP_FORM, 0.0, 1e-3), (DEFAULT_FORM, 0.1, 1.0)):
        fitted = fit_graph(table, nets, dense, PROBE, form=form, corrected=())
        assert all(low <= rmspe(fitted, net) < high for net in separable)
    joint = fit_graph(table, every, obs, PROBE, form=OP_FORM, corrected=(), by_family=False)
    assert max(rmspe(joint, net) for net in every) < 1e-3
    terms = {(t.domain, t.op): t for t in joint.data.graph.layer_terms}
    assert terms[("int8", "conv")].per_out_elem == pytest.approx(4e-6, rel=1e-3)
    shared = fit_graph(table, every, obs, PROBE, form=DEFAULT_FORM, corrected=(), by_family=False)
    assert max(rmspe(shared, net) for net in every) > 0.03
    assert joint.data.to_dict()["version"] == 4
    joint.save(tmp_path / "v4.json")
    assert load_table(tmp_path / "v4.json").data == joint.data


BOUNDARY_TRUTH = DeviceFit(  # a boundary into a depthwise conv costs 4x one into anything else
    {"float->int8": (0.0, 1e-6), "int8->float": (0.0, 1e-6)},
    {"int8": (0.0, 0.0, 2e-6), "float": (0.0, 0.0, 0.0)},
    op_boundaries={("float->int8", "dwconv"): (0.0, 4e-6), ("int8->float", "dwconv"): (0.0, 4e-6)},
)
BOUNDARY_FORM = "int8 fixed+out, float out, weight-only fixed, boundaries into 1x1 / depthwise"


def test_boundaries_keyed_by_the_consumer_op_are_recovered_and_round_trip(
    nets: list[Network], separable: list[Network], tmp_path: Path
) -> None:
    """Boundaries into depthwise convs dearer than the rest: the form keyed by the consumer's op
    recovers both costs, a separable net left out is priced exactly from another one, the
    per-direction form cannot fit them, and the table (version 5) round-trips."""
    every = [*nets, *separable]
    table = fake_table(every)
    obs = [o for i, net in enumerate(every) for o in _observe(table, net, 14, i, truth=BOUNDARY_TRUTH)]
    check = _observe(table, separable[1], 10, 5, truth=BOUNDARY_TRUTH)

    def rmspe(fitted: CostTable) -> float:
        pred = [fitted.policy_cost(separable[1].layers, policy_of(separable[1].layers, o.bits)) for o in check]
        return float(np.sqrt(np.mean(np.square(np.array(pred) / np.array([o.measured_ms for o in check]) - 1))))

    left_out = [o for o in obs if o.network != "f"]
    assert rmspe(fit_graph(table, every, left_out, PROBE, form=BOUNDARY_FORM, corrected=())) < 1e-3
    assert rmspe(fit_graph(table, every, left_out, PROBE, form=DEFAULT_FORM, corrected=())) > 0.01
    joint = fit_graph(table, every, obs, PROBE, form=BOUNDARY_FORM, corrected=(), by_family=False)
    rules = {(r.src, r.dst, r.op): r.latency_ms_per_elem for r in joint.data.graph.rules}
    assert rules[((32, 32), (8, 8), "dwconv")] == pytest.approx(4e-6, rel=1e-3)
    assert rules[((32, 32), (8, 8), "")] == pytest.approx(1e-6, rel=1e-3)
    assert joint.data.to_dict()["version"] == 5
    joint.save(tmp_path / "v5.json")
    assert load_table(tmp_path / "v5.json").data == joint.data


def test_an_op_keyed_rule_in_an_older_version_is_one_line_error(
    nets: list[Network], separable: list[Network], tmp_path: Path
) -> None:
    every = [*nets, *separable]
    table = fake_table(every)
    obs = [o for i, net in enumerate(every) for o in _observe(table, net, 8, i, truth=BOUNDARY_TRUTH)]
    d = fit_graph(table, every, obs, PROBE, form=BOUNDARY_FORM, corrected=(), by_family=False).data.to_dict()
    d["version"] = 4
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(TableError) as err:
        load_table(tmp_path / "old.json")
    assert "needs version 5" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("op", ["pool", "", 3])
def test_bad_boundary_op_is_one_line_error(nets: list[Network], tmp_path: Path, op: Any) -> None:
    table = fake_table(nets)
    d = fit_graph(table, nets, [o for i, n in enumerate(nets) for o in _observe(table, n, 6, i)], PROBE).data.to_dict()
    d["graph"]["transition_rules"][0]["op"] = op
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(TableError) as err:
        load_table(tmp_path / "bad.json")
    assert "graph.transition_rules[0].op" in str(err.value) and "\n" not in str(err.value)


FAMILY_TRUTH = {  # what int8 layers pay differs by family, not by op: the shared terms cannot hold both
    "dense": DeviceFit({"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)}, {"int8": (0.0, 0.0, 4e-6)}),
    "depthwise": DeviceFit({"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)}, {"int8": (0.0, 0.0, 0.5e-6)}),
}


def _family_obs(table: CostTable, every: list[Network], n: int, seed: int) -> dict[str, list[Observation]]:
    return {
        net.name: _observe(table, net, n, seed + i, truth=FAMILY_TRUTH[network_family(net.layers)]) for i, net in enumerate(every)
    }


def test_network_family_and_fit_sets(nets: list[Network], separable: list[Network]) -> None:
    assert {network_family(n.layers) for n in nets} == {"dense"}
    assert {network_family(n.layers) for n in separable} == {"depthwise"}
    both = {"a": "dense", "b": "dense", "e": "depthwise"}
    assert fit_set("dense", both) == ["a", "b"] and fit_set("depthwise", both) == ["a", "b", "e"]
    assert fit_set("dense", {"e": "depthwise", "f": "depthwise"}) == ["e", "f"]  # no dense network: every one


def test_dense_networks_get_terms_fitted_on_dense_networks_only(
    nets: list[Network], separable: list[Network], tmp_path: Path
) -> None:
    """Dense and depthwise networks that pay different per-element costs: fitted by family, a
    dense network left out is priced exactly from the other dense ones, where one shared set of
    terms misses it; a depthwise network is priced by the shared terms; the table (version 6)
    round-trips and says what each family's terms were fitted on."""
    every = [*nets, *separable]
    table = fake_table(every)
    obs = _family_obs(table, every, 14, 0)
    check = _family_obs(table, every, 10, 50)

    def rmspe(fitted: CostTable, net: Network) -> float:
        pred = [fitted.policy_cost(net.layers, policy_of(net.layers, o.bits)) for o in check[net.name]]
        return float(np.sqrt(np.mean(np.square(np.array(pred) / np.array([o.measured_ms for o in check[net.name]]) - 1))))

    left_out = nets[0]
    rest = [o for name, got in obs.items() if name != left_out.name for o in got]
    by_family = fit_graph(table, every, rest, PROBE, form="int8 out", corrected=())
    shared = fit_graph(table, every, rest, PROBE, form="int8 out", corrected=(), by_family=False)
    assert rmspe(by_family, left_out) < 1e-3 < 0.02 < rmspe(shared, left_out)
    joint = fit_graph(table, every, [o for got in obs.values() for o in got], PROBE, form="int8 out", corrected=())
    (dense,) = joint.data.graph.families
    assert dense.family == "dense" and {t.networks for t in dense.layer_terms} == {tuple(sorted(NETS))}
    assert joint.data.graph.layer_terms[0].networks == tuple(sorted([*NETS, "e", "f"]))
    assert max(rmspe(joint, net) for net in nets) < 1e-3
    flat = joint.with_graph(replace(joint.data.graph, families=()))
    for net in separable:
        bits = [o.bits for o in check[net.name]]
        assert [joint.policy_cost(net.layers, policy_of(net.layers, b)) for b in bits] == [
            flat.policy_cost(net.layers, policy_of(net.layers, b)) for b in bits
        ]
    assert joint.data.to_dict()["version"] == 6
    joint.save(tmp_path / "v6.json")
    assert load_table(tmp_path / "v6.json").data == joint.data


@pytest.mark.parametrize(
    "change,field",
    [
        ({"version": 5}, "graph.families"),
        ({"family": "mobile"}, "graph.families[0].family"),
        ({"surprise": 1}, "graph.families[0]"),
        ({"run_overhead": {"metric": "latency", "latency_ms": 10.0, "probe_ms": 20.0}}, "graph.families[0].run_overhead"),
        ({"layer_terms": [{"domain": "int4"}]}, "graph.families[0].layer_terms[0]"),
        ({"duplicate": True}, "graph.families[1].family"),
    ],
)
def test_bad_family_terms_are_one_line_errors(
    nets: list[Network], separable: list[Network], change: dict[str, Any], field: str
) -> None:
    every = [*nets, *separable]
    table = fake_table(every)
    d = fit_graph(table, every, [o for got in _family_obs(table, every, 6, 0).values() for o in got], PROBE).data.to_dict()
    fam = d["graph"]["families"][0]
    if change.get("duplicate"):
        d["graph"]["families"].append(fam)
    elif "version" in change:
        d["version"] = change["version"]
    else:
        fam.update(change)
    with pytest.raises(TableError) as err:
        CostTable.from_dict(d, "bad")
    assert field in str(err.value) and "\n" not in str(err.value)


def test_fitted_overhead_never_empties_an_entry(nets: list[Network]) -> None:
    """A probe slower than the quickest isolated entry: the fitted overhead stays below that entry."""
    table = fake_table(nets)
    obs = [replace(o, measured_ms=o.measured_ms * 0.5) for i, net in enumerate(nets) for o in _observe(table, net, 8, i)]
    fitted = fit_graph(table, nets, obs, RunOverhead("latency", 0.0, 1.0))
    ov = fitted.data.graph.run_overhead
    assert ov is not None and ov.latency_ms <= 0.95 * min(e.latency_ms for e in table.entries()) + 1e-12
    assert CostTable.from_dict(fitted.data.to_dict(), "again").data == fitted.data


def _fake_timing(monkeypatch: pytest.MonkeyPatch, spread: dict[bytes, float]) -> list[bytes]:
    """Replace the session timer: model ``m``'s k-th session gives samples of 1 + ``spread[m]`` x k
    ms (a machine slowing down: no two session floors alike unless the spread is tiny); the
    visit order is recorded."""
    visits: list[bytes] = []

    def fake_session(model: bytes, cfg: ProtocolConfig, limits: Any) -> tuple[list[float], int]:
        visits.append(model)
        k = visits.count(model)
        return [1.0 + spread[model] * k] * 3, 1

    monkeypatch.setattr(timing, "_time_session", fake_session)
    monkeypatch.setattr(timing, "check_model", lambda m: None)
    monkeypatch.setattr(timing, "realized_kernels", lambda m, cfg, limit: ("Conv",))
    return visits


def test_rounds_are_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    models = [b"a", b"b", b"c"]
    visits = _fake_timing(monkeypatch, dict.fromkeys(models, 0.0))
    res = measure_models(models, ProtocolConfig(sessions=4, ci_rel=0.0, max_retries=0, batch_warmup_s=0.0))
    rounds = [visits[i : i + 3] for i in range(0, len(visits), 3)]
    assert len(rounds) == 4 and all(sorted(r) == models for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order rotates
    assert [len(m.samples_ms) for m in res] == [4, 4, 4]


def test_early_stop_waits_for_the_minimum_and_a_floor_seen_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    visits = _fake_timing(monkeypatch, {b"quiet": 0.001, b"noisy": 0.3})
    cfg = ProtocolConfig(sessions=7, ci_rel=0.02, min_sessions=4, max_retries=0, batch_warmup_s=0.0)
    quiet, noisy = measure_models([b"quiet", b"noisy"], cfg)
    assert len(quiet.samples_ms) == 4  # settled from the start, but not before the minimum
    assert len(noisy.samples_ms) == 7
    assert visits.count(b"quiet") == 4 and visits.count(b"noisy") == 7


@pytest.mark.parametrize("ci_rel,attempts", [(0.02, 1), (0.0, 2)])
def test_noisy_samples_with_a_settled_floor_are_not_remeasured(
    monkeypatch: pytest.MonkeyPatch, ci_rel: float, attempts: int
) -> None:
    monkeypatch.setattr(timing, "_time_session", lambda model, cfg, limits: ([0.5, 1.0, 1.5], 1))  # IQR/median 0.5
    monkeypatch.setattr(timing, "check_model", lambda m: None)
    monkeypatch.setattr(timing, "realized_kernels", lambda m, cfg, limit: ("Conv",))
    (m,) = measure_models([b"m"], ProtocolConfig(sessions=5, ci_rel=ci_rel, max_noise=0.1, max_retries=1, batch_warmup_s=0.0))
    assert m.noise > 0.1 and m.attempts == attempts


@pytest.mark.parametrize("values", [[1.0, 1.01, 0.99], [1.0, 1.5, 0.7, 1.2], [2.0, 2.0, 2.0, 2.0, 2.0]])
def test_settled_never_before_the_minimum(values: list[float]) -> None:
    for n in range(1, len(values) + 1):
        cfg = ProtocolConfig(sessions=10, ci_rel=1.0, min_sessions=len(values))
        assert settled(values[:n], cfg) == (n == len(values))
    assert not settled(values, ProtocolConfig(ci_rel=0.0, min_sessions=2))


def test_settled_asks_the_two_lowest_floors_to_agree_whatever_the_rest() -> None:
    cfg = ProtocolConfig(ci_rel=0.02, min_sessions=3)
    assert settled([1.5, 1.0, 1.01], cfg) and settled([1.0, 9.0, 1.02], cfg)  # the slow mode does not matter
    assert not settled([1.0, 1.5, 1.6], cfg)  # one fast session alone is not a floor
    assert settled([7.0, 10.5, 7.14], cfg) == settled([1.0, 1.5, 1.02], cfg)  # relative: unit-free


def _v2_dict(nets: list[Network]) -> dict[str, Any]:
    d = fake_table(nets).data.to_dict()
    d["meta"]["machine"] = {"identity": "0123456789abcdef", "probe_ms": 0.05}
    d["version"] = 2
    return d


def test_version_2_tables_still_load_and_stay_version_2(nets: list[Network], tmp_path: Path) -> None:
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(_v2_dict(nets)))
    table = load_table(path)
    assert not table.data.graph.layer_terms
    table.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text())["version"] == 2


TERM = {
    "domain": "int8",
    "metric": "latency",
    "fixed": 0.001,
    "per_in_elem": 0.0,
    "per_out_elem": 1e-6,
    "networks": ["a"],
    "fitted_on": 4,
}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"domain": "int4"}, "graph.layer_terms[0].domain"),
        ({"per_out_elem": -1e-6}, "graph.layer_terms[0].per_out_elem"),
        ({"fixed": "x"}, "graph.layer_terms[0].fixed"),
        ({"networks": "a"}, "graph.layer_terms[0].networks"),
        ({"fitted_on": 0}, "graph.layer_terms[0].fitted_on"),
        ({"metric": "energy"}, "graph.layer_terms[0].metric"),
        ({"surprise": 1}, "graph.layer_terms[0]"),
        ({"__version__": 2}, "graph.layer_terms"),
        ({"op": "conv3x3", "__version__": 4}, "graph.layer_terms[0].op"),
        ({"op": "dwconv"}, "graph.layer_terms[0].op"),  # an op needs version 4
    ],
)
def test_bad_version_3_field_is_one_line_error(nets: list[Network], change: dict[str, Any], field: str) -> None:
    d = _v2_dict(nets)
    term = {**TERM, **{k: v for k, v in change.items() if k != "__version__"}}
    d["graph"] = {**GraphExtras().to_dict(), "layer_terms": [term]}
    d["version"] = change.get("__version__", 3)
    with pytest.raises(TableError) as err:
        CostTable.from_dict(d, "bad")
    assert field in str(err.value) and "\n" not in str(err.value)
    good = _v2_dict(nets)
    good["graph"], good["version"] = {**GraphExtras().to_dict(), "layer_terms": [TERM]}, 3
    assert CostTable.from_dict(good, "good").data.graph.layer_terms[0].per_out_elem == 1e-6
    good["graph"]["layer_terms"], good["version"] = [TERM, {**TERM, "op": "conv"}], 4
    assert [t.op for t in CostTable.from_dict(good, "good").data.graph.layer_terms] == ["", "conv"]


def test_duplicate_op_term_is_one_line_error(nets: list[Network]) -> None:
    d = _v2_dict(nets)
    d["graph"], d["version"] = {**GraphExtras().to_dict(), "layer_terms": [{**TERM, "op": "linear"}] * 2}, 4
    with pytest.raises(TableError, match="duplicate layer term") as err:
        CostTable.from_dict(d, "bad")
    assert "graph.layer_terms[1]" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overhead,field",
    [
        ({"metric": "latency", "latency_ms": -0.001, "probe_ms": 0.005}, "graph.run_overhead.latency_ms"),
        ({"metric": "latency", "latency_ms": 10.0, "probe_ms": 20.0}, "graph.run_overhead.latency_ms"),  # entries <= 0
        ({"metric": "latency", "latency_ms": 0.006, "probe_ms": 0.005}, "graph.run_overhead.latency_ms"),  # above probe
        ({"metric": "latency", "latency_ms": 0.001, "probe_ms": 0}, "graph.run_overhead.probe_ms"),
        ({"metric": "energy", "latency_ms": 0.001, "probe_ms": 0.005}, "graph.run_overhead.metric"),
        ({"metric": "latency", "latency_ms": 0.001}, "graph.run_overhead"),
    ],
)
def test_bad_run_overhead_is_one_line_error(nets: list[Network], overhead: dict[str, Any], field: str) -> None:
    d = _v2_dict(nets)
    d["graph"], d["version"] = {**GraphExtras().to_dict(), "run_overhead": overhead}, 3
    with pytest.raises(TableError) as err:
        CostTable.from_dict(d, "bad")
    assert field in str(err.value) and "\n" not in str(err.value)


def _mixed_obs(table: CostTable, nets: list[Network]) -> list[Observation]:
    """Configurations whose first layer is always float, each int8 layer 6 µs cheaper inside the network
    than its entry: nothing measured says what the all-int8 network costs."""
    rng = np.random.default_rng(0)
    out = []
    for net in nets:
        for _ in range(12):
            bits = ((32, 32), *(((8, 8) if rng.random() < 0.5 else (32, 32)) for _ in net.layers[1:]))
            s = layer_sum(table, net.layers, policy_of(net.layers, bits))
            out.append(Observation(net.name, "fp-" + net.name, s, bits, s - 0.006 * bits.count((8, 8))))
    return out


@pytest.mark.parametrize("corrected", [(), None])
def test_the_fit_prices_no_measured_network_below_an_empty_models_call(nets: list[Network], corrected: Any) -> None:
    table = fake_table(nets)
    obs = _mixed_obs(table, nets)
    slow = RunOverhead("latency", 0.0, 0.15)  # a made-up empty-model call above net c's free all-int8 price
    free = fit_graph(table, nets, obs, PROBE, form="int8 fixed+out", corrected=corrected)
    assert min(cheapest_configuration(free, net.layers)[1] for net in nets) < slow.probe_ms
    said: list[str] = []
    floored = fit_graph(table, nets, obs, slow, form="int8 fixed+out", corrected=corrected, log=said.append)
    for net in nets:
        assert cheapest_configuration(floored, net.layers)[1] >= slow.probe_ms * (1 - FLOOR_SLACK)
    assert not [line for line in said if line.startswith("warning")]
    held = [
        line.split("configuration of ")[1].split(" is priced")[0].split(", ")
        for line in said
        if " is priced at the fit's floor" in line
    ]
    assert len(held) == 1 and "c" in held[0], said  # the fit says which network's cheapest it held


def test_floors_that_hold_change_nothing_and_broken_ones_are_met(nets: list[Network]) -> None:
    table = fake_table(nets)
    obs = _mixed_obs(table, nets)
    layers_of = {net.name: net.layers for net in nets}
    free = fit_device(obs, layers_of, "int8 fixed+out")
    c = next(net for net in nets if net.name == "c")
    bits = ((8, 8),) * len(c.layers)
    s = layer_sum(table, c.layers, policy_of(c.layers, bits))
    priced = s + free.cost(c.layers, bits)
    held = Observation("c", "fp-c", s, bits, 0.5 * priced)
    assert fit_device(obs, layers_of, "int8 fixed+out", floors=[held]) == free
    broken = replace(held, measured_ms=1.3 * priced)
    floored = fit_device(obs, layers_of, "int8 fixed+out", floors=[broken])
    assert s + floored.cost(c.layers, bits) >= broken.measured_ms * (1 - FLOOR_SLACK)
    assert floored != free
