"""Cost table format, validation, query API, graph extras, builder and `haq tables` command."""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest

import latency_tables
from haq.commands import tables as tables_cmd
from haq.core.errors import ConfigError, PolicyError, TableError
from haq.hardware.build import extend_table
from haq.hardware.build_analytical import AnalyticalBackend
from haq.hardware.networks import model_layers
from haq.models import ZOO
from haq.quant import LayerInfo, LayerSignature, QuantPolicy
from haq.quant.policy import LayerBits
from haq.tables.schema import Entry, network_fingerprint
from haq.tables.table import CostTable, load_table


@pytest.fixture(scope="module")
def zoo_layers() -> dict[str, list[LayerInfo]]:
    return {name: model_layers(name, None, None) for name in ZOO}


@pytest.fixture()
def cnn_table(tmp_path: Path, zoo_layers: dict[str, list[LayerInfo]]) -> Path:
    out = tmp_path / "bf.json"
    extend_table(AnalyticalBackend("bitfusion"), [layer.signature for layer in zoo_layers["digits_cnn"]], out, 1, ["digits_cnn"])
    return out


def _raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _random_policy(layers: list[LayerInfo], rng: random.Random, bits: list[tuple[int, int]]) -> QuantPolicy:
    return QuantPolicy({layer.name: LayerBits(*rng.choice(bits)) for layer in layers})


# ---------------------------------------------------------------- format and validation


def test_round_trip(cnn_table: Path, tmp_path: Path) -> None:
    t = load_table(cnn_table)
    again = tmp_path / "again.json"
    t.save(again)
    assert again.read_text() == cnn_table.read_text()
    assert load_table(again).data == t.data
    assert not list(tmp_path.glob("*.tmp"))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        del node[last]

    return mutate


def _duplicate_entry(d: dict[str, Any]) -> None:
    d["entries"].append(copy.deepcopy(d["entries"][0]))


def _rename_signature(d: dict[str, Any]) -> None:
    key = next(iter(d["signatures"]))
    d["signatures"]["conv-wrong"] = d["signatures"].pop(key)


def _bad_correction(d: dict[str, Any]) -> None:
    d["graph"] = {
        "corrections": [{"fingerprint": "ab", "network": "n", "metric": "latency", "scale": 0, "offset": 0, "fitted_on": 3}]
    }


def _bad_transition(d: dict[str, Any]) -> None:
    d["graph"] = {
        "transitions": [
            {
                "shape": [1, 16, 8],
                "from": [8, 8],
                "to": [32, 32],
                "latency_ms": 0.1,
                "energy_mj": 0.0,
                "source": "measured",
                "kernel": "Q",
            }
        ]
    }


MALFORMED = [
    ("format", _set("format", "haq.policy"), "field 'format'"),
    ("version", _set("version", 99), "field 'version'"),
    ("missing units", _delete("meta/units"), "field 'meta.units'"),
    ("units mismatch", _set("meta/units/latency", "us"), "field 'meta.units.latency'"),
    ("metrics", _set("meta/metrics", ["energy"]), "field 'meta.metrics'"),
    ("metrics type", _set("meta/metrics", ["latency", {}]), "field 'meta.metrics'"),
    ("batch type", _set("meta/batch", "1"), "field 'meta.batch'"),
    ("constant source", _set("meta/constants/frequency/source", ""), "field 'meta.constants.frequency.source'"),
    ("latency type", _set("entries/0/latency_ms", "fast"), "field 'entries[0].latency_ms'"),
    ("negative latency", _set("entries/3/latency_ms", -1.0), "field 'entries[3].latency_ms'"),
    ("zero latency", _set("entries/3/latency_ms", 0), "field 'entries[3].latency_ms'"),
    ("negative iqr", _set("entries/0/latency_iqr_ms", -0.1), "field 'entries[0].latency_iqr_ms'"),
    ("unknown source", _set("entries/2/source", "guessed"), "field 'entries[2].source'"),
    ("measured without samples", _set("entries/2/source", "measured"), "field 'entries[2].samples'"),
    ("missing kernel", _delete("entries/1/kernel"), "field 'entries[1].kernel'"),
    ("missing energy", _delete("entries/1/energy_mj"), "field 'entries[1].energy_mj'"),
    ("bits", _set("entries/0/w_bits", 9), "field 'entries[0].w_bits'"),
    ("bool bits", _set("entries/0/a_bits", True), "field 'entries[0].a_bits'"),
    ("unknown key", _set("entries/0/key", "conv-nope"), "field 'entries[0].key'"),
    ("unknown field", _set("entries/0/median", 1.0), "field 'entries[0].median'"),
    ("duplicate entry", _duplicate_entry, "duplicate entry"),
    ("signature key mismatch", _rename_signature, "field 'signatures.conv-wrong'"),
    ("signature op", _set("signatures/conv-in1-out16-k3x3-s1x1-p1x1-g1-hw8x8-b1-n1/op", "pool"), ".op'"),
    ("correction scale", _bad_correction, "field 'graph.corrections[0].scale'"),
    ("transition shape", _bad_transition, "field 'graph.transitions[0].shape'"),
    ("top level", lambda d: d.clear(), "field 'format'"),
]


@pytest.mark.parametrize("mutate,field", [(m, f) for _, m, f in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_table_is_one_line_error(
    cnn_table: Path, tmp_path: Path, mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    d = _raw(cnn_table)
    mutate(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(TableError) as err:
        load_table(bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and field in msg


def _with_nan(text: str) -> str:
    d = json.loads(text)
    d["entries"][0]["latency_ms"] = float("nan")
    return json.dumps(d)  # Python writes NaN, as a careless tool might


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda t: t[: len(t) // 2], "not valid JSON"),
        (_with_nan, "field 'entries[0].latency_ms': must be finite"),
        (lambda t: t.replace('"version": 1,', '"version": 1, "version": 1,', 1), "duplicate JSON key 'version'"),
        (lambda t: "[]", "field '(top level)'"),
    ],
    ids=["truncated", "nan", "duplicate-key", "array"],
)
def test_malformed_text(cnn_table: Path, tmp_path: Path, make: Callable[[str], str], needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(make(cnn_table.read_text()))
    with pytest.raises(TableError) as err:
        load_table(bad)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unreadable_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read cost table"):
        load_table(tmp_path / "missing.json")
    with pytest.raises(TableError, match="neither a shipped cost table"):
        latency_tables.load("no-such-device")


# ---------------------------------------------------------------- query API


def test_shipped_tables_load_and_cover_every_zoo_model(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    assert {"bitfusion", "bismo-edge", "bismo-cloud"} <= set(latency_tables.available())
    assert [t.name for t in latency_tables.load_all()] == latency_tables.available()
    for name in ("bitfusion", "bismo-edge", "bismo-cloud"):
        t = latency_tables.load(name)
        assert t.sources() == ("analytical",)
        for layers in zoo_layers.values():
            t.check_covers(layers)
            lo, hi = t.cost_range(layers)
            assert 0 < lo < hi
    assert latency_tables.load("bitfusion").metrics == ("latency", "energy")
    assert latency_tables.load("bismo-edge").metrics == ("latency",)


def test_policy_cost_is_sum_of_layer_costs(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    rng = random.Random(0)
    for name in ("bitfusion", "bismo-cloud"):
        t = latency_tables.load(name)
        for layers in (zoo_layers["resnet20"], zoo_layers["mobilenetv2"]):
            pairs = t.supported_bits(layers[0].signature)
            for _ in range(5):
                pol = _random_policy(layers, rng, pairs)
                for metric in t.metrics:
                    expected = sum(
                        t.layer_cost(layer.signature, pol[layer.name].w_bits, pol[layer.name].a_bits, metric) for layer in layers
                    )
                    assert t.policy_cost(layers, pol, metric) == pytest.approx(expected, rel=1e-12)


def test_cost_range_is_uniform_extremes_on_monotone_tables(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    t = latency_tables.load("bismo-edge")
    layers = zoo_layers["mobilenetv2"]
    names = [layer.name for layer in layers]
    lo, hi = t.cost_range(layers)
    assert lo == pytest.approx(t.policy_cost(layers, QuantPolicy.uniform(names, 1)))
    assert hi == pytest.approx(t.policy_cost(layers, QuantPolicy.uniform(names, 8)))


def test_supported_bits_and_unsupported_pairs(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    t = latency_tables.load("bitfusion")
    layers = zoo_layers["digits_cnn"]
    pairs = t.supported_bits(layers[0].signature)
    assert pairs == [(w, a) for w in range(1, 9) for a in range(1, 9)]
    with pytest.raises(TableError, match="w32/a32"):
        t.layer_cost(layers[0].signature, 32, 32)
    pol = QuantPolicy({layer.name: LayerBits(32 if layer.name == "conv2" else 8, 8) for layer in layers})
    with pytest.raises(TableError, match="'conv2'.*w, a in 1..8"):
        t.policy_cost(layers, pol)
    with pytest.raises(TableError, match="no metric 'energy'"):
        latency_tables.load("bismo-edge").policy_cost(layers, QuantPolicy.uniform([layer.name for layer in layers], 8), "energy")
    with pytest.raises(PolicyError, match="'fc'"):
        t.policy_cost(layers, QuantPolicy.uniform(["conv1", "conv2", "conv3"], 8))


def test_check_covers_names_the_missing_layer(cnn_table: Path, zoo_layers: dict[str, list[LayerInfo]]) -> None:
    t = load_table(cnn_table)
    t.check_covers(zoo_layers["digits_cnn"])
    with pytest.raises(TableError, match=r"layer 'conv1' \(signature conv-in1-out16-k3x3-s1x1-p1x1-g1-hw32x32"):
        t.check_covers(zoo_layers["resnet20"])


def test_batch_lookup(tmp_path: Path, zoo_layers: dict[str, list[LayerInfo]]) -> None:
    layers = zoo_layers["digits_cnn"]
    out = tmp_path / "b4.json"
    extend_table(AnalyticalBackend("bismo-edge"), [layer.signature for layer in layers], out, 4)
    t = load_table(out)
    sig = layers[1].signature
    assert t.layer_cost(sig, 4, 4) == t.layer_cost(sig.with_batch(4), 4, 4)
    assert t.layer_cost(sig, 4, 4) > latency_tables.load("bismo-edge").layer_cost(sig, 4, 4)
    with pytest.raises(TableError, match="batch 4"):
        t.layer_cost(sig.with_batch(2), 4, 4)


# ---------------------------------------------------------------- graph-aware extras


def _graph_table(layers: list[LayerInfo], graph: dict[str, Any]) -> CostTable:
    """A 'measured' table running fp32 and int8 only, with the given graph extras."""
    sigs = {layer.signature.key(): layer.signature.to_dict() for layer in layers}
    entries = [
        Entry(
            k,
            w,
            w,
            latency_ms=base * (1.0 if w == 32 else 0.4),
            latency_iqr_ms=0.01,
            samples=30,
            source="measured",
            kernel="Conv" if w == 32 else "QLinearConv",
        ).to_dict()
        for base, k in zip((0.5, 1.0, 0.7, 0.2), sigs)
        for w in (32, 8)
    ]
    meta = copy.deepcopy(dict(latency_tables.load("bismo-edge").meta))
    meta.update(device={"name": "test-cpu", "description": "fake"}, threads=1)
    raw = {"format": "haq.cost_table", "version": 1, "meta": meta, "signatures": sigs, "entries": entries, "graph": graph}
    return CostTable.from_dict(raw, "test-cpu")


def test_transitions_rules_and_correction(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    layers = zoo_layers["digits_cnn"]  # conv1 -> conv2 -> conv3 -> fc
    s2, s4 = layers[1].signature, layers[3].signature
    graph = {
        "transitions": [
            {
                "shape": [1, s2.in_channels, s2.in_h, s2.in_w],
                "from": [8, 8],
                "to": [32, 32],
                "latency_ms": 0.05,
                "source": "measured",
                "kernel": "DequantizeLinear",
            }
        ],
        "transition_rules": [
            {"from": [32, 32], "to": [8, 8], "latency_ms": 0.01, "latency_ms_per_elem": 1e-5, "source": "measured"}
        ],
        "corrections": [
            {
                "fingerprint": network_fingerprint(layers, 1),
                "network": "digits_cnn",
                "metric": "latency",
                "scale": 1.1,
                "offset": 0.02,
                "fitted_on": 10,
            }
        ],
    }
    t = _graph_table(layers, graph)
    names = [layer.name for layer in layers]
    per = {32: [0.5, 1.0, 0.7, 0.2], 8: [0.2, 0.4, 0.28, 0.08]}
    pol = QuantPolicy({n: LayerBits(b, b) for n, b in zip(names, (8, 32, 32, 8))})
    raw = per[8][0] + per[32][1] + per[32][2] + per[8][3]
    raw += 0.05  # exact transition in front of conv2 (8 -> 32)
    raw += 0.01 + 1e-5 * s4.input_elems  # rule in front of fc (32 -> 8)
    assert t.policy_cost(layers, pol) == pytest.approx(1.1 * raw + 0.02)
    assert t.compile(layers).graph_aware


def test_cost_range_is_exact_with_boundaries(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    layers = zoo_layers["digits_cnn"]
    graph = {
        "transition_rules": [
            {"from": [32, 32], "to": [8, 8], "latency_ms": 0.3, "latency_ms_per_elem": 0.0, "source": "measured"},
            {"from": [8, 8], "to": [32, 32], "latency_ms": 0.25, "latency_ms_per_elem": 0.0, "source": "measured"},
        ]
    }
    t = _graph_table(layers, graph)
    names = [layer.name for layer in layers]
    costs = [
        t.policy_cost(layers, QuantPolicy({n: LayerBits(b, b) for n, b in zip(names, combo)}))
        for combo in itertools.product((8, 32), repeat=4)
    ]
    lo, hi = t.cost_range(layers)
    assert lo == pytest.approx(min(costs)) and hi == pytest.approx(max(costs))
    assert hi > sum(max(d.values()) for d in (t.compile(layers).layer_costs(i) for i in range(4)))  # mixes cost more


def test_correction_applies_only_to_its_network(zoo_layers: dict[str, list[LayerInfo]]) -> None:
    layers = zoo_layers["digits_cnn"]
    graph = {
        "corrections": [
            {"fingerprint": "0" * 16, "network": "other", "metric": "latency", "scale": 2.0, "offset": 0.0, "fitted_on": 5}
        ]
    }
    t = _graph_table(layers, graph)
    pol = QuantPolicy.uniform([layer.name for layer in layers], 8)
    assert t.policy_cost(layers, pol) == pytest.approx(0.4 * (0.5 + 1.0 + 0.7 + 0.2))


# ---------------------------------------------------------------- builder and command


class CountingBackend(AnalyticalBackend):
    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.priced: list[str] = []

    def entries(self, sig: LayerSignature) -> list[Entry]:
        self.priced.append(sig.key())
        return super().entries(sig)


def test_build_extends_rather_than_recomputes(tmp_path: Path, zoo_layers: dict[str, list[LayerInfo]]) -> None:
    out = tmp_path / "t.json"
    first = CountingBackend("bismo-edge")
    r1 = extend_table(first, [layer.signature for layer in zoo_layers["digits_cnn"]], out, 1, ["digits_cnn"])
    assert (r1.added, r1.kept, len(first.priced)) == (4, 0, 4)
    before = {e.key: e for e in load_table(out).entries()}
    text = out.read_text()
    again = CountingBackend("bismo-edge")
    r2 = extend_table(again, [layer.signature for layer in zoo_layers["digits_cnn"]], out, 1, ["digits_cnn"])
    assert (r2.added, r2.kept, again.priced) == (0, 4, [])
    assert out.read_text() == text  # nothing new: the file is not rewritten
    grow = CountingBackend("bismo-edge")
    r3 = extend_table(
        grow, [layer.signature for layer in zoo_layers["digits_cnn"] + zoo_layers["digits_mlp"]], out, 1, ["digits_mlp"]
    )
    assert (r3.added, r3.kept, len(grow.priced)) == (3, 4, 3)
    t = load_table(out)
    assert {e.key: e for e in t.entries() if e.key in before} == before
    assert t.meta["models"] == ["digits_cnn", "digits_mlp"] and "updated" in t.meta
    with pytest.raises(TableError, match="meta.device differs"):
        extend_table(AnalyticalBackend("bitfusion"), [layer.signature for layer in zoo_layers["resnet20"]], out, 1)
    with pytest.raises(TableError, match="batch 1, not 2"):
        extend_table(AnalyticalBackend("bismo-edge"), [layer.signature for layer in zoo_layers["resnet20"]], out, 2)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="haq")
    tables_cmd.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


def test_command_build_list_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "edge.json"
    assert _run(["tables", "build", "--model", "digits_cnn", "--device", "bismo-edge", "--out", str(out)]) == 0
    assert "priced 4 new signature(s), kept 0" in capsys.readouterr().out
    assert _run(["tables", "build", "--model", "digits_cnn", "digits_mlp", "--device", "bismo-edge", "--out", str(out)]) == 0
    assert "priced 3 new signature(s), kept 4" in capsys.readouterr().out
    assert _run(["tables", "list"]) == 0
    listing = capsys.readouterr().out
    assert "| bitfusion | bitfusion | latency, energy |" in listing
    assert _run(["tables", "show", str(out), "--entries", "2", "--model", "digits_cnn"]) == 0
    shown = capsys.readouterr().out
    assert "device: bismo-edge" in shown and "network: cheapest" in shown and "uniform 8/8" in shown
    with pytest.raises(ConfigError, match="--device: unknown device 'tpu'"):
        _run(["tables", "build", "--model", "digits_cnn", "--device", "tpu", "--out", str(out)])
    with pytest.raises(ConfigError, match="--batch must be an integer >= 1"):
        _run(["tables", "build", "--model", "digits_cnn", "--device", "bitfusion", "--out", str(out), "--batch", "0"])
    with pytest.raises(ConfigError, match="ci_rel"):
        _run(["tables", "build", "--model", "digits_cnn", "--device", "cpu", "--out", str(tmp_path / "c.json"), "--ci-rel", "2"])
    with pytest.raises(ConfigError, match="--token is for remote"):
        _run(["tables", "build", "--model", "digits_cnn", "--device", "cpu", "--token", "a-secret-token", "--out", str(out)])


def test_with_graph_validates_and_round_trips(tmp_path: Path, zoo_layers: dict[str, list[LayerInfo]]) -> None:
    layers = zoo_layers["digits_cnn"]
    plain = _graph_table(layers, {})
    fitted = _graph_table(
        layers,
        {
            "corrections": [
                {
                    "fingerprint": network_fingerprint(layers, 1),
                    "network": "digits_cnn",
                    "metric": "latency",
                    "scale": 1.5,
                    "offset": 0.0,
                    "fitted_on": 4,
                }
            ]
        },
    )
    t = plain.with_graph(fitted.data.graph)
    pol = QuantPolicy.uniform([layer.name for layer in layers], 32)
    assert t.policy_cost(layers, pol) == pytest.approx(1.5 * plain.policy_cost(layers, pol))
    t.save(tmp_path / "g.json")
    assert load_table(tmp_path / "g.json").data.graph == fitted.data.graph
