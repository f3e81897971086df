"""Calibrate the BISMO cloud model against HAQ's released cloud table, and describe both.

HAQ (Wang et al., CVPR 2019) ships, without a generator, a cost table of MobileNetV2 (224x224,
batch 16) on its cloud accelerator: one cost per layer and (w, a) in 1..8. Half of its 53
layers (the even-indexed ones, with their shapes) ship in
``latency_tables/data/haq-mbv2-cloud-calibration.json``; the other half is held out, so the fit
moves a few physical parameters of :class:`~haq.hardware.analytical.BismoConfig`, never a
per-layer term:

* the sustained off-chip port width (bits per cycle), continuous;
* the depths of the LHS (weight) and RHS (activation) tile memories, powers of two (BRAM
  sizes).

The array (16x256x16) and the clock stay as configured: HAQ's units behave like cycles of that
array (depthwise layers cost channels * N * a / 16, the classifier weights * w / 256), and the
clock only converts cycles to milliseconds. There is no per-layer overhead term: HAQ's
activation-bound layers cost exactly 1/8 of 8-bit at 1 bit, the classifier exactly
weights * w / 256.

The loss compares each layer's share of the network's 8/8 cost (scale-free, log error, every
layer equally) plus, weighted heavily, the figures the issue asks for: the whole-network
uniform-bit curve (cost at b/b over 8/8, b = 1..8) and the w8a4 / w4a8 ratios over 8/8.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import numpy.typing as npt
from scipy import optimize

import latency_tables
from haq.core.errors import ConfigError, TableError
from haq.core.jsonio import read_json
from haq.hardware.analytical import BISMO_CLOUD, BismoConfig, BismoWork, bismo_work
from haq.quant.discovery import LayerSignature
from haq.quant.primitives import MAX_BITS, MIN_BITS

CALIBRATION_FILE = latency_tables.TABLE_DIR / "data" / "haq-mbv2-cloud-calibration.json"
BITS = np.arange(MIN_BITS, MAX_BITS + 1)
CURVE_TOLERANCE = 0.05
DEPTHS = tuple(2**e for e in range(2, 15))
_TARGET_WEIGHT = 100.0
_PORT_RANGE = (16.0, 8192.0)


@dataclass(frozen=True)
class CalibrationLayer:
    """One layer of HAQ's table: its signature and ``cost[w - 1, a - 1]`` in HAQ's units."""

    index: int
    signature: LayerSignature
    cost: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Figures:
    """Whole-network figures of a set of layers: cost at b/b, w8a4 and w4a8, each over 8/8."""

    curve: tuple[float, ...]
    w8a4: float
    w4a8: float

    def max_gap(self, other: "Figures") -> float:
        """The largest absolute difference over the curve and both ratios."""
        gaps = [abs(x - y) for x, y in zip(self.curve, other.curve)]
        return max(gaps + [abs(self.w8a4 - other.w8a4), abs(self.w4a8 - other.w4a8)])


@dataclass(frozen=True)
class Sensitivity:
    """How a layer's 8/8 cost moves with one width: cost at w1a8 and at w8a1, over 8/8.

    1.0 means insensitive to that width; 0.125 means proportional to it.
    """

    w1a8: float
    w8a1: float


@dataclass(frozen=True)
class FitResult:
    """The fitted parameters, the loss, the figures and the HAQ units per model cycle at 8/8."""

    config: BismoConfig
    loss: float
    model: Figures
    reference: Figures
    units_per_cycle: float


def load_calibration(path: Path = CALIBRATION_FILE) -> list[CalibrationLayer]:
    """The layers of a HAQ-style table file (shapes and ``cost[w-1][a-1]``), batch from its network line."""
    try:
        doc = read_json(path, "calibration table", error=TableError)
        batch = int(str(doc["network"]).split("batch")[1].split(";")[0].strip())
        return [_layer(d, batch) for d in doc["layers"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise TableError(f"cannot read calibration table {path}: {e}") from e


def _layer(d: dict[str, Any], batch: int) -> CalibrationLayer:
    op = str(d["op"])
    kh, kw = (int(v) for v in d["kernel"])
    if op == "linear":
        sig = LayerSignature(
            "linear", int(d["in_channels"]), int(d["out_channels"]), (1, 1), (1, 1), (0, 0), 1, 1, 1, True, batch
        )
    else:
        h, w = (int(v) for v in d["input_hw"])
        sh, sw = (int(v) for v in d["stride"])
        sig = LayerSignature(
            op,
            int(d["in_channels"]),
            int(d["out_channels"]),
            (kh, kw),
            (sh, sw),
            (kh // 2, kw // 2),
            int(d["groups"]),
            h,
            w,
            False,
            batch,
        )
    cost = np.asarray(d["cost"], dtype=np.float64)
    if cost.shape != (len(BITS), len(BITS)) or not np.all(np.isfinite(cost)) or np.any(cost <= 0):
        raise ValueError(f"layer {d.get('index')}: cost must be a positive {len(BITS)}x{len(BITS)} grid")
    return CalibrationLayer(index=int(d["index"]), signature=sig, cost=cost)


def model_costs(cfg: BismoConfig, signatures: Sequence[LayerSignature]) -> npt.NDArray[np.float64]:
    """Model cycles ``[layer, w - 1, a - 1]``."""
    return np.stack([bismo_work(s, BITS[:, None], BITS[None, :], cfg).cycles(cfg.port_bits) for s in signatures])


def figures(costs: npt.NDArray[np.float64]) -> Figures:
    """Whole-network figures of ``costs[layer, w - 1, a - 1]``."""
    total = costs.sum(axis=0)
    top = total[-1, -1]
    return Figures(
        curve=tuple(float(total[b, b] / top) for b in range(len(BITS))),
        w8a4=float(total[7, 3] / top),
        w4a8=float(total[3, 7] / top),
    )


def sensitivity(cost: npt.NDArray[np.float64]) -> Sensitivity:
    """A layer's width sensitivities (see :class:`Sensitivity`)."""
    return Sensitivity(w1a8=float(cost[0, -1] / cost[-1, -1]), w8a1=float(cost[-1, 0] / cost[-1, -1]))


def fit_cloud(layers: Sequence[CalibrationLayer], base: BismoConfig = BISMO_CLOUD, depths: Sequence[int] = DEPTHS) -> FitResult:
    """Fit the port width for every pair of tile-memory depths (powers of two); keep the best pair."""
    if not layers or not depths:
        raise ConfigError("fit_cloud needs at least one calibration layer and one tile-memory depth")
    sigs = [layer.signature for layer in layers]
    ref = np.stack([layer.cost for layer in layers])
    target = figures(ref)
    ref_share = ref / ref.sum(axis=0)[-1, -1]
    fits = []
    for lhs in depths:
        for rhs in depths:
            cfg = dataclasses.replace(base, lhs_depth=lhs, rhs_depth=rhs)
            value, port = _fit_port([bismo_work(s, BITS[:, None], BITS[None, :], cfg) for s in sigs], ref_share, target)
            fits.append((value, dataclasses.replace(cfg, port_bits=round(port, 1))))
    cfg = min(fits, key=lambda f: f[0])[1]
    costs = model_costs(cfg, sigs)
    return FitResult(
        config=cfg,
        loss=_loss(costs, ref_share, target),
        model=figures(costs),
        reference=target,
        units_per_cycle=float(ref.sum(axis=0)[-1, -1] / costs.sum(axis=0)[-1, -1]),
    )


def _fit_port(works: Sequence[BismoWork], ref_share: npt.NDArray[np.float64], target: Figures) -> tuple[float, float]:
    """(loss, port bits): a coarse log-spaced scan, then scipy's bounded scalar search around its best point.

    The loss is piecewise smooth in the port (ceilings), so the scan keeps the search out of
    poor local minima and the bounded search refines within one scan step.
    """

    def loss(log2_port: float) -> float:
        port = 2.0**log2_port
        return _loss(np.stack([wk.cycles(port) for wk in works]), ref_share, target)

    grid = np.linspace(math.log2(_PORT_RANGE[0]), math.log2(_PORT_RANGE[1]), 27)
    start = float(grid[int(np.argmin([loss(x) for x in grid]))])
    step = float(grid[1] - grid[0])
    res = optimize.minimize_scalar(loss, bounds=(max(grid[0], start - step), min(grid[-1], start + step)), method="bounded")
    best = min((loss(start), start), (float(res.fun), float(res.x)))
    return best[0], 2.0 ** best[1]


def _loss(costs: npt.NDArray[np.float64], ref_share: npt.NDArray[np.float64], target: Figures) -> float:
    share = costs / costs.sum(axis=0)[-1, -1]
    per_layer = float(np.mean(np.log(share / ref_share) ** 2))
    got = figures(costs)
    gaps = np.array(got.curve + (got.w8a4, got.w4a8)) - np.array(target.curve + (target.w8a4, target.w4a8))
    return per_layer + _TARGET_WEIGHT * float(np.sum(gaps**2))
