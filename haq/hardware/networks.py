"""Untrained networks to price and time: building them, drawing random policies, exporting them.

Latency does not depend on weight values, so a network is built untrained (seeded) at the
input shape :func:`haq.workload.resolve_input` gives, and calibrated on a few dataset images
(seeded random images where no data is named): pricing its layers (:mod:`haq.hardware.build`), checking a
table against it (:mod:`haq.hardware.check`) and fitting a table on it (:mod:`haq.hardware.fit`)
never train anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from haq.core.errors import PolicyError, TableError
from haq.core.types import BitPair, Log
from haq.export import export_policy
from haq.hardware.measured import container_options
from haq.quant import LayerBits, LayerInfo, QuantPolicy
from haq.tables.schema import UNSIGNED_WEIGHTS
from haq.tables.table import CostTable
from haq.workload import WorkloadConfig, discover, sample_inputs, untrained_model, workload_layers

CALIBRATION_IMAGES = 16


@dataclass(frozen=True)
class Network:
    """An untrained, seeded instance of a model with what exporting it needs."""

    name: str
    model: nn.Module
    layers: list[LayerInfo]
    input_shape: tuple[int, ...]
    calibration: torch.Tensor


def load_network(
    model: str,
    dataset: str | None = None,
    data_root: str | None = None,
    seed: int = 0,
    *,
    input_size: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> Network:
    """Build ``model`` (zoo name or ``package.module:callable``) untrained, with calibration images,
    at the input :func:`haq.workload.resolve_input` gives for these settings."""
    return network_of(
        WorkloadConfig(
            model=model, dataset=dataset, data_root=data_root, seed=seed, input_size=input_size, input_shape=input_shape
        )
    )


def network_of(cfg: WorkloadConfig) -> Network:
    """The untrained network of a workload config (its model, input and data settings)."""
    net, inp = untrained_model(cfg)
    return Network(cfg.model, net, discover(net, inp), inp.shape, sample_inputs(cfg, inp, CALIBRATION_IMAGES))


def model_layers(
    model: str,
    dataset: str | None,
    data_root: str | None,
    *,
    input_size: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> list[LayerInfo]:
    """Layers of a zoo or user model at its resolved input shape (no training, no data decoded)."""
    return workload_layers(
        WorkloadConfig(model=model, dataset=dataset, data_root=data_root, input_size=input_size, input_shape=input_shape)
    )


def supported_pairs(table: CostTable, layers: Sequence[LayerInfo]) -> list[list[BitPair]]:
    """Per layer, the measured pairs the table holds (emulated / analytical pairs are not drawn)."""
    table.check_covers(layers)
    out = []
    for layer in layers:
        pairs = [p for p in table.supported_bits(layer.signature) if table.entry(layer.signature, *p).source == "measured"]
        if not pairs:
            raise TableError(
                f"table {table.name} has no measured entry for layer '{layer.name}'; checking or fitting needs a measured table"
            )
        out.append(pairs)
    return out


def sample_policies(layers: Sequence[LayerInfo], supported: Sequence[Sequence[BitPair]], n: int, seed: int) -> list[QuantPolicy]:
    """``n`` random policies: half pick each layer's pair independently, half in contiguous runs.

    Runs of equal precision are what a search that sees boundary costs produces; independent
    draws are the most fragmented case. Both are drawn only from pairs the device runs.
    """
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        picks = _independent(rng, supported) if k % 2 == 0 else _in_runs(rng, supported)
        out.append(policy_of(layers, picks, {"drawn": "haq.hardware.networks", "seed": seed, "index": k}))
    return out


def _independent(rng: np.random.Generator, supported: Sequence[Sequence[BitPair]]) -> list[BitPair]:
    return [_pick(rng, s) for s in supported]


def _in_runs(rng: np.random.Generator, supported: Sequence[Sequence[BitPair]]) -> list[BitPair]:
    """A pair kept until a random cut (1 to 3 of them) or a layer that does not run it."""
    n = len(supported)
    cuts: set[int] = set()
    if n > 1:
        size = min(n - 1, int(rng.integers(1, 4)))
        cuts = set(rng.choice(np.arange(1, n), size=size, replace=False).tolist())
    picks: list[BitPair] = []
    current: BitPair | None = None
    for i, s in enumerate(supported):
        if current is None or i in cuts or current not in s:
            current = _pick(rng, s)
        picks.append(current)
    return picks


def _pick(rng: np.random.Generator, pairs: Sequence[BitPair]) -> BitPair:
    w, a = pairs[rng.integers(len(pairs))]
    return (int(w), int(a))


def export_all(
    net: Network, policies: Sequence[QuantPolicy], log: Log | None = None, weights: str = UNSIGNED_WEIGHTS
) -> list[bytes]:
    """Exported, verified ONNX bytes of every policy, 8-bit weights in the container ``weights``
    (a table's :attr:`~haq.tables.table.CostTable.export_weights` when the models are timed against it)."""
    options = container_options(weights)
    out = []
    for i, p in enumerate(policies, 1):
        out.append(export_policy(net.model, net.layers, p, net.input_shape, net.calibration, options).onnx_bytes)
        if log and (i % 5 == 0 or i == len(policies)):
            log(f"{net.name}: exported {i}/{len(policies)} policies")
    return out


def bits_of(layers: Sequence[LayerInfo], policy: QuantPolicy) -> tuple[BitPair, ...]:
    """A policy's (w, a) per layer, in layer order."""
    return tuple((policy[layer.name].w_bits, policy[layer.name].a_bits) for layer in layers)


def policy_of(layers: Sequence[LayerInfo], bits: Sequence[BitPair], meta: dict[str, object] | None = None) -> QuantPolicy:
    """The policy giving ``layers`` the (w, a) pairs ``bits``, in layer order."""
    if len(bits) != len(layers):
        raise PolicyError(f"got bits for {len(bits)} layers, the network has {len(layers)}")
    return QuantPolicy({layer.name: LayerBits(int(w), int(a)) for layer, (w, a) in zip(layers, bits)}, meta or {})
