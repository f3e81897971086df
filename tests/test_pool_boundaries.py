"""A float -> int8 boundary behind a max-pool: discovery finds the pool, the fit prices it per
element entering the pool, the table (format version 7) keeps and applies that rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from table_fakes import fake_table
from torch import nn

from haq.core.errors import TableError
from haq.hardware.fit import fit_graph, layer_sum
from haq.hardware.graph_fit import DeviceFit, Observation, fit_device, pool_features
from haq.hardware.networks import Network, policy_of
from haq.quant import discover_layers
from haq.tables.network import Boundary
from haq.tables.schema import GraphExtras, TransitionRule
from haq.tables.table import CostTable, load_table

F, Q = (32, 32), (8, 8)
TRUTH = DeviceFit(
    {"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)},
    {"int8": (0.0, 0.0, 4e-6), "float": (0.0, 0.0, 0.0)},
    pool_per_elem=6e-6,
)


def _pooled(widths: tuple[int, ...], pool_after: tuple[int, ...], kernel: int = 2) -> nn.Module:
    """3x3 convs with a max-pool after the convs numbered in ``pool_after``, then a classifier."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        mods += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU()]
        if i in pool_after:
            mods.append(nn.MaxPool2d(kernel, stride=2, padding=kernel // 2 if kernel % 2 else 0))
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


NETS = {
    "p": ((3, 8, 16, 16), (0,), 2, (3, 16, 16)),
    "q": ((3, 16, 16, 32), (0, 1), 3, (3, 20, 20)),
    "r": ((3, 8, 24), (0,), 3, (3, 12, 12)),
    "s": ((3, 16, 8, 8), (), 2, (3, 12, 12)),
}


@pytest.fixture(scope="module")
def nets() -> list[Network]:
    out = []
    for name, (widths, after, kernel, shape) in NETS.items():
        model = _pooled(widths, after, kernel).eval()
        out.append(Network(name, model, discover_layers(model, shape), shape, torch.zeros((1, *shape))))
    return out


class _PoolThenFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.avg(self.conv(x)))  # an average pool is not a max-pool
        return self.fc(torch.flatten(self.pool(x), 1))  # a flattened view of a max-pool's output still is


def test_discovery_records_the_max_pool_a_layer_reads() -> None:
    layers = discover_layers(_PoolThenFlatten().eval(), (3, 8, 8))
    assert [(x.name, x.pool_input) for x in layers] == [("conv", 0), ("conv2", 0), ("fc", 4 * 4 * 4)]
    vgg = discover_layers(_pooled((3, 8, 16, 16), (0, 1)).eval(), (3, 16, 16))
    assert [x.pool_input for x in vgg] == [0, 8 * 16 * 16, 16 * 8 * 8, 0]


def test_a_pool_rule_adds_to_the_float_to_int8_boundary_only() -> None:
    rules = {
        (F, Q, "", ""): TransitionRule(F, Q, 0.0, 0.01, None, None, "measured"),
        (Q, F, "", ""): TransitionRule(Q, F, 0.0, 0.02, None, None, "measured"),
        (F, Q, "", "maxpool"): TransitionRule(F, Q, 0.0, 0.5, None, None, "measured", through="maxpool"),
    }
    behind_pool, plain = Boundary(1, 100, {}, "conv", pool_elems=400), Boundary(1, 100, {}, "conv")
    assert behind_pool.cost(F, Q, "latency", rules) == pytest.approx(0.01 * 100 + 0.5 * 400)
    assert plain.cost(F, Q, "latency", rules) == pytest.approx(0.01 * 100)
    assert behind_pool.cost(Q, F, "latency", rules) == pytest.approx(0.02 * 100)  # the pool stays float
    assert behind_pool.cost(Q, Q, "latency", rules) == 0.0


def _observe(table: CostTable, net: Network, n: int, seed: int) -> list[Observation]:
    """Whole-model times made from :data:`TRUTH` on top of the table's entries."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        bits = tuple(Q if rng.random() < 0.5 else F for _ in net.layers)
        s = layer_sum(table, net.layers, policy_of(net.layers, bits))
        out.append(Observation(net.name, "fp-" + net.name, s, bits, s + TRUTH.cost(net.layers, bits)))
    return out


def test_the_pool_term_is_fitted_and_prices_a_network_left_out(nets: list[Network], tmp_path: Path) -> None:
    table = fake_table(nets)
    assert any(pool_features(nets[0].layers, o.bits)[0] for o in _observe(table, nets[0], 12, 0))
    measured, left_out = [n for n in nets if n.name != "q"], next(n for n in nets if n.name == "q")
    obs = [o for i, net in enumerate(measured) for o in _observe(table, net, 16, i)]
    fit = fit_device(obs, {net.name: net.layers for net in nets}, form="int8 out")
    assert fit.pool_per_elem == pytest.approx(TRUTH.pool_per_elem, rel=1e-3)
    without = fit_device([o for o in obs if o.network == "s"], {"s": nets[3].layers}, form="int8 out")
    assert without.pool_per_elem == 0.0  # no network with a pool: nothing identifies the term

    fitted = fit_graph(table, measured, obs, None, form="int8 out", corrected=())
    assert [r.through for r in fitted.data.graph.rules].count("maxpool") == 1
    assert fitted.data.to_dict()["version"] == 7
    fitted.save(tmp_path / "v7.json")
    reloaded = load_table(tmp_path / "v7.json")
    assert reloaded.data == fitted.data
    checks = _observe(table, left_out, 10, 99)
    assert any(pool_features(left_out.layers, o.bits)[0] for o in checks)
    for o in checks:
        got = reloaded.policy_cost(left_out.layers, policy_of(left_out.layers, o.bits))
        assert got == pytest.approx(o.measured_ms, rel=1e-3)
    bare = table.with_graph(GraphExtras(rules=tuple(r for r in fitted.data.graph.rules if not r.through)))
    off = [bare.policy_cost(left_out.layers, policy_of(left_out.layers, o.bits)) / o.measured_ms for o in checks]
    assert min(off) < 0.99  # without the rule, boundaries behind a pool are priced low


def test_bad_pool_rules_are_one_line_errors(nets: list[Network], tmp_path: Path) -> None:
    table = fake_table(nets)
    obs = [o for i, net in enumerate(nets) for o in _observe(table, net, 12, i)]
    fitted = fit_graph(table, nets, obs, None, form="int8 out", corrected=())
    good = fitted.data.to_dict()
    pooled = next(i for i, r in enumerate(good["graph"]["transition_rules"]) if r.get("through"))

    def broken(edit: str) -> dict[str, object]:
        d = json.loads(json.dumps(good))
        rule = d["graph"]["transition_rules"][pooled]
        if edit == "version":
            d["version"] = 6
        elif edit == "kind":
            rule["through"] = "avgpool"
        else:
            rule["op"] = "conv"
        return d

    for edit, message in (
        ("version", "needs version 7"),
        ("kind", "must be one of maxpool"),
        ("op", "takes no 'op'"),
    ):
        path = tmp_path / f"{edit}.json"
        path.write_text(json.dumps(broken(edit)))
        with pytest.raises(TableError, match=message) as err:
            load_table(path)
        assert "\n" not in str(err.value)
