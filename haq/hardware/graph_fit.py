"""Graph-aware pricing for measured CPU tables: boundary rules and per-network corrections.

On onnxruntime a mixed-precision network is not the sum of its isolated layers: every change
between the int8 domain (W8A8, QDQ) and the float domain (fp32 and weight-only layers, whose
activations are float) adds Quantize / Dequantize and NCHW<->NHWC transposes, while inside a
same-precision region those vanish. The table format (:mod:`haq.tables.schema`) prices a
precision change in front of layer *i* as ``fixed + per_elem * input elements`` and a network
as ``scale * (layers + boundaries) + offset``. This module fits those numbers on whole models
measured end to end, in two stages:

1. boundary costs, jointly over every network, with the layer sum taken at face value:
   ``T - S = sum_g (fixed_g * n_g + per_elem_g * e_g) + c_net * k + o_net``, where ``S`` is the
   sum of the table's in-context per-layer costs, ``g`` the direction of a domain change
   (float->int8 or int8->float), ``n_g`` the number of such boundaries, ``e_g`` their elements
   and ``k`` the number of layers run in the int8 domain. ``c_net`` (>= 0, per network) is what
   an int8 region of that graph pays around the ops between layers (residual adds, pooling go
   through dequantize / requantize), which single-layer entries cannot see: on ResNet-20 it is
   most of the gap between the all-int8 layer sum and the measurement. Fixing the scale at 1 is
   what keeps the fit honest: with a free per-network scale the solver can shrink the measured
   layer costs towards zero and explain the data with an offset and inflated boundaries (the
   degenerate x0.03 fits of the first table);
2. per network, a correction ``measured ≈ scale * (S + c_net * k + boundaries) + offset`` with ``scale``
   bounded to :data:`SCALE_BOUNDS` (a table whose layer costs are off by more than that is a
   table to rebuild, not to patch). Offset-only and bounded-affine forms are both fitted and
   the one with the smaller leave-one-out error is kept, so a dozen noisy configurations
   cannot buy a slope they do not support.

Residuals are relative throughout (the accuracy target is relative); boundary costs are
non-negative. Everything here is pure numerics on (layers, bits, measured ms); timing lives
in :mod:`haq.hardware.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import lsq_linear

from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant import LayerInfo
from haq.tables.schema import Correction, TransitionRule

DIRECTIONS = ("float->int8", "int8->float")
SCALE_BOUNDS = (0.8, 1.25)


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
    """Fitted boundary cost per direction, (fixed ms, ms per element), and per network the
    cost of each layer run in the int8 domain (ms)."""

    per_direction: Mapping[str, tuple[float, float]]
    per_int8_layer: Mapping[str, float]

    def cost(self, features: np.ndarray) -> float:
        """Boundary cost of a configuration from its :func:`boundary_features`."""
        return float(
            sum(
                self.per_direction[d][0] * features[2 * k] + self.per_direction[d][1] * features[2 * k + 1]
                for k, d in enumerate(DIRECTIONS)
            )
        )

    def rules(self, pairs: Sequence[BitPair]) -> list[TransitionRule]:
        """A table rule for every ordered pair of ``pairs`` that crosses domains."""
        out = []
        for src in pairs:
            for dst in pairs:
                d = direction(src, dst)
                if d is None:
                    continue
                fixed, per = self.per_direction[d]
                out.append(
                    TransitionRule(
                        src=src,
                        dst=dst,
                        latency_ms=fixed,
                        latency_ms_per_elem=per,
                        energy_mj=None,
                        energy_mj_per_elem=None,
                        source="measured",
                    )
                )
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


def int8_layers(bits: Sequence[BitPair]) -> int:
    """How many layers of a configuration run in the int8 domain."""
    return sum(domain(b) == "int8" for b in bits)


def fit_boundaries(obs: Sequence[Observation], layers_of: Mapping[str, Sequence[LayerInfo]]) -> BoundaryFit:
    """Boundary costs by joint relative least squares, layer sums at scale 1, per network an
    offset and an int8-layer cost."""
    if len(obs) < 3:
        raise TableError(f"fitting boundary costs needs at least 3 measured configurations, got {len(obs)}")
    _check_observations(obs)
    nets = sorted({o.network for o in obs})
    n_b = 2 * len(DIRECTIONS)
    a = np.zeros((len(obs), n_b + 2 * len(nets)))
    target = np.empty(len(obs))
    for r, o in enumerate(obs):
        k = n_b + 2 * nets.index(o.network)
        a[r, :n_b] = boundary_features(layers_of[o.network], o.bits)
        a[r, k] = 1.0
        a[r, k + 1] = int8_layers(o.bits)
        a[r] /= o.measured_ms
        target[r] = 1.0 - o.layer_sum_ms / o.measured_ms
    lo = np.full(a.shape[1], -np.inf)
    lo[:n_b] = 0.0
    lo[n_b + 1 :: 2] = 0.0
    sol = _bounded_lsq(a, target, lo, np.full(a.shape[1], np.inf))
    return BoundaryFit(
        {d: (float(sol[2 * k]), float(sol[2 * k + 1])) for k, d in enumerate(DIRECTIONS)},
        {net: float(sol[n_b + 2 * k + 1]) for k, net in enumerate(nets)},
    )


def fit_correction(
    raw_ms: Sequence[float],
    measured_ms: Sequence[float],
    network: str,
    fingerprint: str,
    scale_bounds: tuple[float, float] = SCALE_BOUNDS,
    per_int8_layer: float = 0.0,
) -> Correction:
    """``measured ≈ scale * raw + offset`` (relative least squares), ``scale`` within ``scale_bounds``.

    The offset-only form (``scale = 1``) and the bounded affine form are both fitted; the one
    with the smaller leave-one-out RMS relative error is returned (offset-only on ties and
    when there are too few points to cross-validate a slope). ``raw_ms`` already includes
    ``per_int8_layer`` (from :func:`fit_boundaries`), which is stored with the correction.
    """
    raw, meas = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    if len(raw) < 2 or not (np.all(np.isfinite(raw)) and np.all(np.isfinite(meas)) and np.all(meas > 0)):
        raise TableError(f"correction for {network} needs >= 2 finite measurements with positive times, got {len(raw)}")
    lo_s, hi_s = scale_bounds
    if not 0.0 < lo_s <= 1.0 <= hi_s:
        raise TableError(f"scale bounds must satisfy 0 < low <= 1 <= high, got {scale_bounds}")
    best = (1.0, _offset_only(raw, meas))
    if len(raw) >= 3 and _loo_error(raw, meas, scale_bounds) < _loo_error(raw, meas, (1.0, 1.0)):
        best = _affine(raw, meas, scale_bounds)
    return Correction(
        fingerprint=fingerprint,
        network=network,
        metric="latency",
        scale=float(best[0]),
        offset=float(best[1]),
        fitted_on=len(raw),
        per_int8_layer=per_int8_layer,
    )


def _affine(raw: np.ndarray, meas: np.ndarray, scale_bounds: tuple[float, float]) -> tuple[float, float]:
    """Relative least squares of ``scale * raw + offset`` with ``scale`` in ``scale_bounds``."""
    if scale_bounds[0] == scale_bounds[1]:
        return scale_bounds[0], _offset_only(raw, meas, scale_bounds[0])
    a = np.stack([raw / meas, 1.0 / meas], axis=1)
    sol = _bounded_lsq(a, np.ones(len(raw)), np.array([scale_bounds[0], -np.inf]), np.array([scale_bounds[1], np.inf]))
    return float(sol[0]), float(sol[1])


def _offset_only(raw: np.ndarray, meas: np.ndarray, scale: float = 1.0) -> float:
    """The offset minimising the relative squared error of ``scale * raw + offset``."""
    w = 1.0 / meas**2
    return float(np.sum(w * (meas - scale * raw)) / np.sum(w))


def _loo_error(raw: np.ndarray, meas: np.ndarray, scale_bounds: tuple[float, float]) -> float:
    """Leave-one-out RMS relative error of the correction form given by ``scale_bounds``."""
    errs = []
    for i in range(len(raw)):
        keep = np.arange(len(raw)) != i
        s, o = _affine(raw[keep], meas[keep], scale_bounds)
        errs.append((s * raw[i] + o) / meas[i] - 1.0)
    return float(np.sqrt(np.mean(np.square(errs))))


def _bounded_lsq(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``lsq_linear`` with column scaling (features span ms to element counts)."""
    col = np.maximum(np.abs(a).max(axis=0), 1e-12)
    return lsq_linear(a / col, b, bounds=(lo * col, hi * col)).x / col


def _check_observations(obs: Sequence[Observation]) -> None:
    for o in obs:
        if not (np.isfinite(o.layer_sum_ms) and np.isfinite(o.measured_ms) and o.measured_ms > 0 and o.layer_sum_ms >= 0):
            raise TableError(
                f"observation of {o.network} has layer sum {o.layer_sum_ms!r} ms and measurement {o.measured_ms!r} ms; "
                "both must be finite, the measurement > 0"
            )
