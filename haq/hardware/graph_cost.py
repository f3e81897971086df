"""Graph-aware pricing for measured CPU tables: boundary rules and per-network corrections.

On onnxruntime a mixed-precision network is not the sum of its isolated layers: every change
between the int8 domain (W8A8, QDQ) and the float domain (fp32 and weight-only layers, whose
activations are float) adds Quantize / Dequantize and NCHW<->NHWC transposes, while inside a
same-precision region those vanish. The table format (:mod:`haq.hardware.schema`) prices a
precision change in front of layer *i* as ``fixed + per_elem * input elements`` and a network
as ``scale * (layers + boundaries) + offset``. This module fits those numbers on whole models
measured end to end:

1. joint fit over every network: ``T = a_net * S + sum_g (fixed_g * n_g + per_elem_g * e_g) + o_net``
   (boundary terms are then divided by the geometric mean of ``a_net``, the stored unit)
   where ``S`` is the sum of the table's per-layer costs, ``g`` is the direction of a
   domain change (float->int8 or int8->float), ``n_g`` the number of such boundaries and ``e_g``
   their elements; residuals are relative (the accuracy target is relative) and boundary costs
   are bounded to be non-negative;
2. per network, ``scale`` and ``offset`` refitted on ``S + boundaries`` so the stored formula is
   exactly the one :class:`haq.hardware.network.NetworkCosts` evaluates.

Everything here is pure numerics on (layers, bits, measured ms); timing lives in
:mod:`haq.hardware.check`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import lsq_linear

from haq.errors import TableError
from haq.hardware.schema import BitPair, Correction, TransitionRule
from haq.quant import LayerInfo

DIRECTIONS = ("float->int8", "int8->float")


@dataclass(frozen=True)
class Observation:
    """One measured whole-model configuration of a network."""

    network: str
    fingerprint: str
    layer_sum_ms: float
    bits: tuple[BitPair, ...]
    measured_ms: float


@dataclass(frozen=True)
class BoundaryFit:
    """Fitted boundary cost per direction: (fixed ms, ms per element)."""

    per_direction: Mapping[str, tuple[float, float]]

    def rules(self, pairs: Sequence[BitPair]) -> list[TransitionRule]:
        """A table rule for every ordered pair of ``pairs`` that crosses domains."""
        out = []
        for src in pairs:
            for dst in pairs:
                d = direction(src, dst)
                if d is None:
                    continue
                fixed, per = self.per_direction[d]
                out.append(TransitionRule(src=src, dst=dst, latency_ms=fixed, latency_ms_per_elem=per,
                                          energy_mj=None, energy_mj_per_elem=None, source="measured"))
        return out


def domain(pair: BitPair) -> str:
    """``int8`` when the layer's input is quantized on the CPU (W8A8), else ``float``."""
    return "int8" if pair[1] == 8 else "float"


def direction(src: BitPair, dst: BitPair) -> str | None:
    """The domain change between two consecutive layers, or ``None`` when there is none."""
    a, b = domain(src), domain(dst)
    return None if a == b else f"{a}->{b}"


def boundary_features(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> np.ndarray:
    """[count, elements] per direction (in :data:`DIRECTIONS` order) of a configuration."""
    feats = np.zeros(2 * len(DIRECTIONS))
    for i in range(1, len(layers)):
        d = direction(bits[i - 1], bits[i])
        if d is not None:
            k = DIRECTIONS.index(d)
            feats[2 * k] += 1.0
            feats[2 * k + 1] += layers[i].signature.input_elems
    return feats


def fit_boundaries(obs: Sequence[Observation], layers_of: Mapping[str, Sequence[LayerInfo]]) -> BoundaryFit:
    """Joint relative least squares of boundary costs with a free scale / offset per network."""
    if len(obs) < 3:
        raise TableError(f"fitting boundary costs needs at least 3 measured configurations, got {len(obs)}")
    nets = sorted({o.network for o in obs})
    n_b = 2 * len(DIRECTIONS)
    rows, target = [], []
    for o in obs:
        row = np.zeros(n_b + 2 * len(nets))
        row[:n_b] = boundary_features(layers_of[o.network], o.bits)
        k = nets.index(o.network)
        row[n_b + 2 * k] = o.layer_sum_ms
        row[n_b + 2 * k + 1] = 1.0
        rows.append(row / o.measured_ms)
        target.append(1.0)
    a = np.array(rows)
    col = np.maximum(np.abs(a).max(axis=0), 1e-12)  # column scaling keeps the solver well conditioned
    lo = np.full(a.shape[1], -np.inf)
    lo[:n_b] = 0.0
    lo[n_b::2] = 1e-3
    sol = lsq_linear(a / col, np.array(target), bounds=(lo * col, np.full(a.shape[1], np.inf))).x / col
    # The stored formula is scale * (layers + boundaries): express boundaries in layer-sum units.
    a_bar = float(np.exp(np.mean(np.log(sol[n_b::2]))))
    return BoundaryFit({d: (float(sol[2 * k]) / a_bar, float(sol[2 * k + 1]) / a_bar) for k, d in enumerate(DIRECTIONS)})


def fit_correction(raw_ms: Sequence[float], measured_ms: Sequence[float], network: str, fingerprint: str) -> Correction:
    """``measured ≈ scale * raw + offset`` in relative least squares, ``scale`` kept positive."""
    raw, meas = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    if len(raw) < 2 or not (np.all(np.isfinite(raw)) and np.all(meas > 0)):
        raise TableError(f"correction for {network} needs >= 2 finite measurements, got {len(raw)}")
    a = np.stack([raw / meas, 1.0 / meas], axis=1)
    sol = lsq_linear(a, np.ones(len(raw)), bounds=([1e-3, -np.inf], [np.inf, np.inf])).x
    return Correction(fingerprint=fingerprint, network=network, metric="latency",
                      scale=float(sol[0]), offset=float(sol[1]), fitted_on=len(raw))
