"""A measured network gets device terms of its own when its distinct configurations outnumber
their unknowns (format version 7), else a correction; fit configurations are distinct."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from table_fakes import TRUTH, fake_table, plain_networks
from table_helpers import load_error
from torch import nn

from haq.core.errors import TableError
from haq.hardware.fit import fit_graph, fit_policies, layer_sum
from haq.hardware.graph_fit import OWN_FORM, PRIOR_WEIGHT, DeviceFit, Observation, fit_device
from haq.hardware.networks import Network, bits_of, policy_of
from haq.quant import discover_layers
from haq.tables.schema import GraphExtras, network_fingerprint
from haq.tables.table import CostTable, load_table

OWN_TRUTH = DeviceFit(  # one graph whose int8 region costs three times its family's per element
    {"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)},
    {"int8": (0.0, 0.0, 12e-6), "float": (0.0, 0.0, 0.0)},
)


@pytest.fixture(scope="module")
def nets() -> list[Network]:
    return plain_networks()


def _observe(table: CostTable, net: Network, bits: list[tuple[tuple[int, int], ...]], truth: DeviceFit) -> list[Observation]:
    out = []
    for b in bits:
        s = layer_sum(table, net.layers, policy_of(net.layers, b))
        fp = network_fingerprint(net.layers, table.batch)
        out.append(Observation(net.name, fp, s, b, s + truth.cost(net.layers, b)))
    return out


def _distinct(net: Network, n: int, seed: int) -> list[tuple[tuple[int, int], ...]]:
    rng = np.random.default_rng(seed)
    seen: dict[tuple[tuple[int, int], ...], None] = {}
    while len(seen) < n:
        seen[tuple((8, 8) if rng.random() < 0.5 else (32, 32) for _ in net.layers)] = None
    return list(seen)


def test_a_network_unlike_its_family_is_priced_by_its_own_terms(nets: list[Network], tmp_path: Path) -> None:
    table = fake_table(nets)
    odd = next(n for n in nets if n.name == "c")  # 5 layers: 20 distinct configurations exist
    obs = [o for net in nets if net is not odd for o in _observe(table, net, _distinct(net, 8, 1), TRUTH)]
    obs += _observe(table, odd, _distinct(odd, 12, 2), OWN_TRUTH)
    fitted = fit_graph(table, nets, obs, None, form="int8 out")
    g = fitted.data.graph
    assert "c" in {n.network for n in g.networks}
    assert "c" not in {c.network for c in g.corrections}
    assert fitted.data.to_dict()["version"] == 7
    fitted.save(tmp_path / "v7.json")
    reloaded = load_table(tmp_path / "v7.json")
    assert reloaded.data == fitted.data
    checks = _observe(table, odd, _distinct(odd, 16, 3), OWN_TRUTH)
    for o in checks:  # within the weak pull toward the family's terms (next tests), felt by each of the own form's terms
        assert reloaded.policy_cost(odd.layers, policy_of(odd.layers, o.bits)) == pytest.approx(o.measured_ms, rel=2e-2)
    family = table.with_graph(GraphExtras(rules=g.rules, layer_terms=g.layer_terms))
    off = [family.policy_cost(odd.layers, policy_of(odd.layers, o.bits)) / o.measured_ms for o in checks]
    assert min(off) < 0.95  # the family's terms alone price it low


def test_own_terms_take_their_own_form_and_the_device_terms_keep_theirs(nets: list[Network]) -> None:
    table = fake_table(nets)
    odd = next(n for n in nets if n.name == "c")
    obs = [o for net in nets if net is not odd for o in _observe(table, net, _distinct(net, 8, 1), TRUTH)]
    obs += _observe(table, odd, _distinct(odd, 12, 2), OWN_TRUTH)
    checks = _observe(table, odd, _distinct(odd, 16, 3), OWN_TRUTH)
    for own_form, keyed in ((OWN_FORM, True), (None, False)):
        g = fit_graph(table, nets, obs, None, form="int8 out", own_form=own_form).data.graph
        (own,) = [n for n in g.networks if n.network == "c"]
        assert any(t.op for t in own.layer_terms) == keyed, "int8 terms keyed by op only in the own form"
        assert not any(t.op for t in g.layer_terms), "the device terms keep the form they were asked for"
        fitted = table.with_graph(g)
        for o in checks:
            assert fitted.policy_cost(odd.layers, policy_of(odd.layers, o.bits)) == pytest.approx(o.measured_ms, rel=2e-2)


def test_own_terms_are_pulled_toward_the_family_by_the_prior_weight(nets: list[Network]) -> None:
    table = fake_table(nets)
    odd = next(n for n in nets if n.name == "c")
    layers_of = {net.name: net.layers for net in nets}
    family = fit_device(
        [o for net in nets if net is not odd for o in _observe(table, net, _distinct(net, 8, 1), TRUTH)], layers_of, "int8 out"
    )
    mine = _observe(table, odd, _distinct(odd, 12, 2), OWN_TRUTH)
    free, weak, strong = (fit_device(mine, layers_of, "int8 out", prior=family, prior_weight=w) for w in (0.0, PRIOR_WEIGHT, 1e6))
    for o in mine:  # unpulled, the network's own terms are its truth
        assert free.predict(o, odd.layers) == pytest.approx(o.measured_ms, rel=1e-9)
    f, w, s, p = (np.asarray(x.solution) for x in (free, weak, strong, family))
    assert not np.allclose(f, p)  # the network really is unlike its family
    k = int(np.argmax(np.abs(f - p)))  # the term the network differs in (int8 per output element)
    assert min(f[k], p[k]) < w[k] < max(f[k], p[k]) and abs(w[k] - f[k]) < 0.1 * abs(p[k] - f[k])  # pulled a little
    for o in mine:
        assert weak.predict(o, odd.layers) == pytest.approx(o.measured_ms, rel=1e-2)
    assert s == pytest.approx(p, rel=1e-3, abs=1e-12)  # a heavy weight is the family's terms
    with pytest.raises(TableError, match="prior weight must be a finite number >= 0"):
        fit_device(mine, layers_of, "int8 out", prior=family, prior_weight=-1.0)


def test_too_few_distinct_configurations_get_a_correction(nets: list[Network]) -> None:
    table = fake_table(nets)
    small = next(n for n in nets if n.name == "b")  # 3 layers
    obs = [o for net in nets if net is not small for o in _observe(table, net, _distinct(net, 8, 1), TRUTH)]
    repeats = [((8, 8),) * 3, ((32, 32),) * 3, ((8, 8), (32, 32), (8, 8))] * 3
    obs += _observe(table, small, repeats, OWN_TRUTH)
    fitted = fit_graph(table, nets, obs, None, form="int8 out")
    assert "b" not in {n.network for n in fitted.data.graph.networks}
    assert "b" in {c.network for c in fitted.data.graph.corrections}


def test_bad_network_terms_are_one_line_errors(nets: list[Network], tmp_path: Path) -> None:
    table = fake_table(nets)
    obs = [o for i, net in enumerate(nets) for o in _observe(table, net, _distinct(net, 7, i), TRUTH)]
    good = fit_graph(table, nets, obs, None, form="int8 out").data.to_dict()
    assert good["graph"]["networks"], "7 configurations: too few for the own form, own terms in the device terms' form"
    assert not any(t.get("op") for n in good["graph"]["networks"] for t in n["layer_terms"])
    for edit, message in (
        (lambda d: d.update(version=6), "needs version 7"),
        (lambda d: d["graph"]["networks"].append(d["graph"]["networks"][0]), "duplicate terms for network"),
        (lambda d: d["graph"]["networks"][0].update(fitted_on=0), "fitted_on"),
        (lambda d: d["graph"]["networks"][0].pop("layer_terms"), "layer_terms"),
    ):
        d = json.loads(json.dumps(good))
        edit(d)
        assert message in load_error(d, tmp_path / "bad.json")


def test_fit_configurations_are_distinct(nets: list[Network]) -> None:
    table = fake_table(nets)
    for net in nets:
        got = [bits_of(net.layers, p) for p in fit_policies(table, net, 12, 0)]
        assert got[0] == ((32, 32),) * len(net.layers) and got[1] == ((8, 8),) * len(net.layers)
        assert len(set(got)) == len(got) == min(12, 2 ** len(net.layers))
    model = nn.Sequential(nn.Linear(4, 2))
    one = Network("one", model, discover_layers(model, (4,)), (4,), torch.zeros((1, 4)))
    assert len(fit_policies(fake_table([one]), one, 12, 0)) == 2  # fp32 and int8: all there is
