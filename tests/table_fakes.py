"""Fakes for fitting device terms: small plain conv networks, a made-up measured table of their
layers, and the device terms whole-model times are generated from."""

from __future__ import annotations

import copy

import torch
from torch import nn

import latency_tables
from haq.hardware.graph_fit import DeviceFit
from haq.hardware.networks import Network
from haq.quant import discover_layers
from haq.tables.schema import Entry
from haq.tables.table import CostTable

TRUTH = DeviceFit(
    {"float->int8": (0.0, 2e-6), "int8->float": (0.0, 1e-6)},
    {"int8": (0.0, 0.0, 4e-6), "float": (0.0, 0.0, 0.0)},
)
"""Device terms of the fake device: whole-model times are made from them."""


def plain_net(widths: tuple[int, ...]) -> nn.Module:
    """3x3 convs of ``widths`` channels, global pooling, a classifier."""
    mods: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        mods += [nn.Conv2d(a, b, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 10))


NETS: dict[str, tuple[tuple[int, ...], tuple[int, int, int]]] = {
    "a": ((3, 8, 16, 16), (3, 16, 16)),
    "b": ((3, 16, 32), (3, 12, 12)),
    "c": ((3, 8, 8, 8, 24), (3, 10, 10)),
    "d": ((3, 24, 12), (3, 20, 20)),
}


def plain_networks() -> list[Network]:
    """The :data:`NETS`, built and discovered."""
    out = []
    for name, (widths, shape) in NETS.items():
        model = plain_net(widths).eval()
        out.append(Network(name, model, discover_layers(model, shape), shape, torch.zeros((1, *shape))))
    return out


def fake_table(nets: list[Network]) -> CostTable:
    """A 'measured' fp32 / int8 table of every layer of ``nets`` (costs made up from MACs)."""
    sigs = {layer.signature.key(): layer.signature for net in nets for layer in net.layers}
    entries = [
        Entry(k, w, w, (0.01 + 1e-6 * s.macs) * (1.0 if w == 32 else 0.4), 0.0, 5, "measured", "k").to_dict()
        for k, s in sigs.items()
        for w in (32, 8)
    ]
    meta = copy.deepcopy(dict(latency_tables.load("bismo-edge").meta))
    meta.update(device={"name": "test-cpu", "description": "fake"}, threads=1)
    raw = {
        "format": "haq.cost_table",
        "version": 1,
        "meta": meta,
        "signatures": {k: s.to_dict() for k, s in sigs.items()},
        "entries": entries,
    }
    return CostTable.from_dict(raw, "test-cpu")
