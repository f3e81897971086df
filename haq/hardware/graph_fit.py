"""Graph-aware pricing for measured CPU tables: per-device terms that travel, and per-network corrections.

On onnxruntime a mixed-precision network is not the sum of its isolated layers: every change
between the int8 domain (W8A8, QDQ) and the float domain (fp32 and weight-only layers, whose
activations are float) adds Quantize / Dequantize and NCHW<->NHWC transposes, an int8 region
pays requantize work around the ops between layers (residual adds, pooling), and every
isolated single-layer entry holds a share of one inference call's overhead that a network pays
once. This module fits those effects on whole models measured end to end, in two stages:

1. **device terms**, once per device, jointly over every network measured, with no
   per-network unknown, so they hold for a network never measured whole:
   ``T = S - r * w + sum_g per_elem_g * e_g + sum_k (f_k * n_k + a_k * in_k + b_k * out_k)``,
   where ``S`` is the sum of the table's in-context entries, ``w`` the sum of their kernel
   shares minus 1 (how many call overheads ``S`` holds beyond the network's own), ``r`` the
   call overhead (bounded by the measured call time of a near-empty model), ``e_g`` the
   elements crossing domain changes in direction ``g`` and, per layer kind ``k`` (int8,
   weight-only, float), ``n_k`` / ``in_k`` / ``out_k`` the layers of that kind and their
   input / output elements. Which of the layer-term columns are free is a *form*
   (:data:`FORMS`).

   Why these features: they are what any network has (shapes only, no graph walk), and on
   five networks measured here (digits_cnn, digits_mlp, ResNet-20, a 6-conv VGG, a 4-block
   residual net; 16 fit and 12 checked configurations each) they are what held when a
   network was left out of the fit. The int8 gap grows with output elements at about the
   same rate (0.4-0.6 ns per element) in the plain VGG (no residual adds) and in ResNet-20
   (adds), so the ops between int8 layers need no graph walk; boundaries are priced per
   element only (fixed per-boundary costs fitted on large networks put small ones 30-50 %
   high); the call overhead (about 3 µs) is most of the gap on a 16-30 µs network and is
   identified only by small networks in the fit, hence bounded by a measured probe;
   weight-only (MatMulNBits) entries overstate their in-graph cost by a further ~1 µs each,
   and int8 layers cost ~0.6 µs each beyond their output elements. The default form
   (:data:`DEFAULT_FORM`) has exactly those terms: leaving each of the five networks out in
   turn, it was the only candidate with >= 80 % of checked configurations within ±10 % on
   all five (the other forms: 8-50 % on digits_mlp). ``"auto"`` re-selects the form by
   leave-one-network-out error. Forms "by op" give each op kind (dense kxk conv, 1x1 conv,
   depthwise conv, linear: :func:`haq.tables.schema.op_kind`) its own int8 (and float) terms:
   MobileNetV2's int8 layer sum is within 1 % of its measurement, so the per-output-element
   cost the dense 3x3 convs need does not apply to its depthwise / 1x1 layers, and an op kind
   no fitted network has gets no term. Forms ending "boundaries into 1x1 / depthwise" give
   boundaries into those op kinds their own per-element cost (table rules keyed by the
   consumer's op, format version 5): what a boundary inserts (a QuantizeLinear and, into a
   conv, a layout reorder) costs per element what the consuming kernel makes it cost, and
   MobileNetV2's fitted int8->float cost was half the dense networks'. A boundary term no
   observation identifies falls back to its direction's shared term. Every form also prices a
   float -> int8 boundary into a layer that reads a max-pool's output per element entering the
   pool (:func:`pool_features`): onnxruntime then runs the pool in int8. A per-network scale is
   never fitted here: it would let the solver shrink measured layer costs towards zero (the
   degenerate x0.03 fits of the first table). Which networks fit the terms that price a network
   depends on its family (:func:`fit_set`): dense networks get terms of their own, fitted on the
   dense networks alone, when the fit also holds networks with depthwise convs;
2. per measured network, device terms of its own (:func:`fit_device` on its configurations
   alone, its family's terms for what they do not identify) where it has more distinct
   configurations than those terms have unknowns (:func:`haq.hardware.fit.fit_graph`), else
   a correction ``measured ≈ scale * (device prediction) + offset``
   with ``scale`` bounded to :data:`SCALE_BOUNDS` (a table whose layer costs are off by more
   than that is a table to rebuild, not to patch). Offset-only and bounded-affine forms are
   both fitted and the one with the smaller leave-one-out error is kept, so a dozen noisy
   configurations cannot buy a slope they do not support.

Residuals are relative throughout (the accuracy target is relative); per-element costs are
non-negative. Everything here is pure numerics on (layers, bits, measured ms); timing lives
in :mod:`haq.hardware.fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import lsq_linear, minimize

from haq.core.errors import TableError
from haq.core.types import BitPair
from haq.quant import LayerInfo
from haq.tables.schema import DOMAINS, OP_KINDS, Correction, LayerTerm, TransitionRule, domain, op_kind, term_domain

DIRECTIONS = ("float->int8", "int8->float")
POOLED_DIRECTION = "float->int8"
"""The boundary that costs a max-pool in front of its consumer more: onnxruntime moves its
Quantize up through the pool and runs the pool in int8 (an int8 -> float boundary there keeps
the pool in float, as does an int8 region with its own Quantize after the pool)."""
SCALE_BOUNDS = (0.8, 1.25)
FLOOR_SLACK = 1e-6
"""How far (relative to the floor) a floored configuration's prediction may fall below it: the
solver's tolerance."""


@dataclass(frozen=True)
class Observation:
    """One measured whole-model configuration of a network."""

    network: str
    fingerprint: str
    layer_sum_ms: float
    bits: tuple[BitPair, ...]
    measured_ms: float
    overhead_weight: float = 0.0
    """How many call overheads the layer sum holds beyond the one a network pays: the sum of
    its entries' kernel shares minus 1 (:class:`haq.tables.schema.RunOverhead`)."""


@dataclass(frozen=True)
class DeviceFit:
    """Per-device graph terms fitted over several networks: boundary cost per direction
    (fixed ms, ms per element) and per (direction, consumer op kind) where that op has its own,
    per domain the layer term of every op (fixed ms, ms per input element, ms per output
    element) and per (domain, op kind) the term of that op only, on top; ``networks`` and
    ``fitted_on`` say what they were fitted on."""

    per_direction: Mapping[str, tuple[float, float]]
    layer_terms: Mapping[str, tuple[float, float, float]]
    networks: tuple[str, ...] = ()
    fitted_on: int = 0
    form: str = ""
    run_overhead_ms: float = 0.0
    op_terms: Mapping[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)
    op_boundaries: Mapping[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    """(direction, consumer op kind) -> (fixed ms, ms per element), replacing ``per_direction``
    for boundaries into that op."""
    pool_per_elem: float = 0.0
    """ms per element entering a max-pool that a float -> int8 boundary passes (:func:`pool_features`),
    on top of the boundary's own cost."""
    solution: tuple[float, ...] = ()
    """The solved free columns in the form's layout (:func:`_solve`), so that a fit of the same form
    on fewer observations can take the terms those do not identify from this one."""
    identified: int = 0
    """How many of those columns the observations identified (the rest are 0 or the prior's)."""

    def cost(self, layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> float:
        """What the boundary and layer terms add to a configuration's layer sum (ms)."""
        return float(np.dot(device_features(layers, bits), self.vector()))

    def predict(self, o: Observation, layers: Sequence[LayerInfo]) -> float:
        """The device-level prediction of an observed configuration (ms)."""
        return o.layer_sum_ms + self.cost(layers, o.bits) - self.run_overhead_ms * o.overhead_weight

    def vector(self) -> np.ndarray:
        """The terms in :func:`device_features` column order."""
        v = [x for d in DIRECTIONS for op in OP_KINDS for x in self.op_boundaries.get((d, op), self.per_direction[d])]
        zero = (0.0, 0.0, 0.0)
        for dom in DOMAINS:
            for op in OP_KINDS:
                v += [a + b for a, b in zip(self.layer_terms.get(dom, zero), self.op_terms.get((dom, op), zero))]
        return np.asarray(v + [0.0, self.pool_per_elem])

    def rules(self, pairs: Sequence[BitPair]) -> list[TransitionRule]:
        """A table rule for every ordered pair of ``pairs`` that crosses domains, and one more
        per consumer op kind with its own boundary cost."""
        out = []
        for src in pairs:
            for dst in pairs:
                d = direction(src, dst)
                if d is None:
                    continue
                keyed = [("", self.per_direction[d])] + [(op, t) for (dd, op), t in sorted(self.op_boundaries.items()) if dd == d]
                out += [TransitionRule(src, dst, fixed, per, None, None, "measured", op) for op, (fixed, per) in keyed]
                if d == POOLED_DIRECTION and self.pool_per_elem > 0.0:
                    out.append(TransitionRule(src, dst, 0.0, self.pool_per_elem, None, None, "measured", through="maxpool"))
        return out

    def terms(self) -> tuple[LayerTerm, ...]:
        """The table's ``graph.layer_terms`` (latency): one per domain, then per (domain, op),
        with a non-zero term."""
        keyed = [((dom, ""), t) for dom, t in sorted(self.layer_terms.items())] + sorted(self.op_terms.items())
        return tuple(
            LayerTerm(dom, "latency", t[0], t[1], t[2], self.networks, max(self.fitted_on, 1), op)
            for (dom, op), t in keyed
            if any(t)
        )


def direction(src: BitPair, dst: BitPair) -> str | None:
    """The domain change between two consecutive layers, or ``None`` when there is none."""
    a, b = domain(src), domain(dst)
    return None if a == b else f"{a}->{b}"


def boundary_features(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> np.ndarray:
    """[count, elements] per (direction, consumer op kind) of a configuration, in
    :data:`DIRECTIONS` then :data:`OP_KINDS` order."""
    feats = np.zeros(2 * len(DIRECTIONS) * len(OP_KINDS))
    for i in range(1, len(layers)):
        d = direction(bits[i - 1], bits[i])
        if d is not None:
            k = _boundary_column(d, op_kind(layers[i].signature))
            feats[k] += 1.0
            feats[k + 1] += layers[i].signature.input_elems
    return feats


def layer_features(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> np.ndarray:
    """[layers, input elements, output elements] per (domain, op kind) (:data:`DOMAINS` then
    :data:`OP_KINDS` order): every column a form may sum into one term."""
    feats = np.zeros(3 * len(DOMAINS) * len(OP_KINDS))
    for layer, b in zip(layers, bits):
        k = _layer_column(term_domain(b), op_kind(layer.signature), 0)
        feats[k : k + 3] += (1.0, layer.signature.input_elems, layer.signature.output_elems)
    return feats


def _layer_column(dom: str, op: str, feature: int) -> int:
    """Index of a (domain, op kind, feature) column within :func:`layer_features`."""
    return 3 * (DOMAINS.index(dom) * len(OP_KINDS) + OP_KINDS.index(op)) + feature


def pool_features(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> np.ndarray:
    """[count, pool input elements] of the float -> int8 boundaries into a layer that reads a
    max-pool's output (:attr:`haq.quant.LayerInfo.pool_input`).

    Why a term of its own: on onnxruntime (1 thread, this machine's CPU) such a boundary moves
    its QuantizeLinear above the pool, which then runs in int8 in NCHW layout: in a 6-conv VGG
    at 32x32 the first pool took 128 us profiled against 9 us as the float NCHWc kernel, and
    every checked policy with such a boundary was measured 5-55 % above the prediction that
    lacked it, every other one 1-13 % below (bench/tables.py, 2026-12-01). The extra work is
    the pool's, so it is priced per element entering the pool."""
    feats = np.zeros(2)
    for i in range(1, len(layers)):
        if layers[i].pool_input and direction(bits[i - 1], bits[i]) == POOLED_DIRECTION:
            feats += (1.0, layers[i].pool_input)
    return feats


def device_features(layers: Sequence[LayerInfo], bits: Sequence[BitPair]) -> np.ndarray:
    """Boundary, layer, then max-pool features of a configuration: the columns of the device fit."""
    return np.concatenate([boundary_features(layers, bits), layer_features(layers, bits), pool_features(layers, bits)])


FormTerm = tuple[str, str, int]
"""One free column: (domain, op kind or "" for every op, feature) of a layer term, or
(direction, consumer op kind, 1) of a boundary term: boundaries into that op get their own
per-element cost instead of the direction's."""


def _boundaries_by_op(ops: Sequence[str] = ("conv1x1", "dwconv")) -> tuple[FormTerm, ...]:
    """A boundary term per direction and consumer op of ``ops`` (the other ops share the
    direction's term, which the dense networks identify)."""
    return tuple((d, op, 1) for d in DIRECTIONS for op in ops)


def _by_op(dom: str, feature: int, ops: Sequence[str] = OP_KINDS) -> tuple[FormTerm, ...]:
    """One column per op kind of ``ops``: the term split by op."""
    return tuple((dom, op, feature) for op in ops)


_LAYER_FORMS: dict[str, tuple[FormTerm, ...]] = {
    "int8 out": (("int8", "", 2),),
    "int8 fixed+out": (("int8", "", 0), ("int8", "", 2)),
    "int8 fixed+out, float out": (("int8", "", 0), ("int8", "", 2), ("float", "", 2)),
    "int8 fixed+out, weight-only fixed": (("int8", "", 0), ("int8", "", 2), ("weight-only", "", 0)),
    "int8 fixed+out, float out, weight-only fixed": (("int8", "", 0), ("int8", "", 2), ("float", "", 2), ("weight-only", "", 0)),
    "int8 fixed+out by op, float out, weight-only fixed": (
        *_by_op("int8", 0),
        *_by_op("int8", 2),
        ("float", "", 2),
        ("weight-only", "", 0),
    ),
    "int8 fixed, int8 out of kxk conv, float out, weight-only fixed": (
        ("int8", "", 0),
        ("int8", "conv", 2),
        ("float", "", 2),
        ("weight-only", "", 0),
    ),
    "int8 fixed, int8 and float out of kxk conv, weight-only fixed": (
        ("int8", "", 0),
        ("int8", "conv", 2),
        ("float", "conv", 2),
        ("weight-only", "", 0),
    ),
    "int8 fixed+out by op, float out by op, weight-only fixed": (
        *_by_op("int8", 0),
        *_by_op("int8", 2),
        *_by_op("float", 2),
        ("weight-only", "", 0),
    ),
}
FORMS: Mapping[str, tuple[FormTerm, ...]] = {
    **_LAYER_FORMS,
    **{
        f"{name}, boundaries into 1x1 / depthwise": (*_LAYER_FORMS[name], *_boundaries_by_op())
        for name in ("int8 fixed+out, float out, weight-only fixed", "int8 fixed+out by op, float out, weight-only fixed")
    },
}
"""Candidate layer-term forms: which (domain, op, feature) columns may be non-zero besides the
boundaries' per-element costs; feature 0 per layer (may be negative), 1 per input element,
2 per output element (>= 0); op "" sums every op into one term, an op kind
(:func:`haq.tables.schema.op_kind`) gives that kind its own term. An op kind no network of the
fit has gets no term (0): a network made of it is priced by its layer sum."""
DEFAULT_FORM = "int8 fixed+out, float out, weight-only fixed"
OWN_FORM = "int8 fixed+out by op, float out, weight-only fixed"
"""The form of a network's own terms (:func:`haq.hardware.fit.fit_graph`), pulled toward its
family's terms fitted in the same form. Why not :data:`DEFAULT_FORM`: own terms are fitted on the
network's own configurations, so they can give each op kind its own int8 terms (MobileNetV2's
depthwise and 1x1 int8 layers do not cost what a dense 3x3 conv does per output element), where
device terms must carry to networks that lack some of those ops. On five runs of
``bench/tables.py`` (eight networks, 24 fit configurations, 16 checks each) own terms in this form
put 100 % of every network's checks within ±10 % on every run, in the device terms' form 88-100 %
(MobileNetV2 at 88 % on two runs); latency_tables/README.md."""
PRIOR_WEIGHT = 0.05
"""How strongly a fit with a prior (a network's own terms, :func:`fit_device`) is pulled toward the
prior's terms: each identified term costs as much as this many observations mispredicted by the
change it makes to a typical prediction, relative. Weak on purpose: it decides only where the
network's configurations barely tell terms apart. Chosen on two runs of ``bench/tables.py``
(12 fit configurations; the fewest checks within ±10 % rose 50 -> 62 % and, with 24
configurations, 75 -> 81 % on a third run, the mean never fell; from 0.2 up, digits_cnn lost a
check on one of the two; latency_tables/README.md)."""


def fit_device(
    obs: Sequence[Observation],
    layers_of: Mapping[str, Sequence[LayerInfo]],
    form: str | None = None,
    max_overhead_ms: float = 0.0,
    prior: DeviceFit | None = None,
    prior_weight: float = PRIOR_WEIGHT,
    floors: Sequence[Observation] = (),
) -> DeviceFit:
    """Device terms by joint relative least squares over every network, no per-network term.

    ``form`` picks the layer-term columns (:data:`FORMS`, default :data:`DEFAULT_FORM`);
    ``"auto"`` takes the form with the smallest leave-one-network-out error where there are
    3 networks or more (noisy with few networks: on four, it missed the weight-only term that
    the fifth needed). With ``max_overhead_ms`` > 0 the call overhead is fitted too, within
    [0, that]. A term no observation identifies is 0, or ``prior``'s where it has the same form
    (terms of one network fall back to those fitted on its family); the identified ones are pulled
    toward ``prior``'s with ``prior_weight`` (:data:`PRIOR_WEIGHT`). Each of ``floors`` is a
    configuration whose prediction must be at least its ``measured_ms`` (:func:`haq.hardware.fit.fit_graph`
    passes the cheapest configurations of the networks these terms price): a fixed per-layer term
    may be negative, and a fit free to extrapolate priced a network's cheapest configuration below
    zero.
    """
    if len(obs) < 3:
        raise TableError(f"fitting device terms needs at least 3 measured configurations, got {len(obs)}")
    _check_observations([*obs, *floors])
    if form is not None and form != "auto" and form not in FORMS:
        raise TableError(f"unknown device-term form {form!r}; choose from auto, {', '.join(FORMS)}")
    if not (math.isfinite(prior_weight) and prior_weight >= 0.0):
        raise TableError(f"prior weight must be a finite number >= 0 (observations), got {prior_weight!r}")
    nets = sorted({o.network for o in obs})
    feats = _design(obs, layers_of)
    lonos = {f: lono_error(obs, feats, f, max_overhead_ms) for f in FORMS} if form == "auto" and len(nets) >= 3 else {}
    chosen = min(lonos, key=lonos.__getitem__) if lonos else (form if form in FORMS else DEFAULT_FORM)
    fallback = np.asarray(prior.solution) if prior is not None and prior.form == chosen and prior.solution else None
    floor = (floors, _design(floors, layers_of)) if floors else None
    sol, x, identified = _solve(obs, feats, chosen, max_overhead_ms, fallback, prior_weight, floor)
    n_d = len(DIRECTIONS)
    generic, pool, free = x[:n_d], float(x[n_d]), x[n_d + 1 : -1]
    terms: dict[tuple[str, str], list[float]] = {(dom, ""): [0.0, 0.0, 0.0] for dom in DOMAINS}
    bounds: dict[tuple[str, str], tuple[float, float]] = {}
    own = _own_boundaries(feats, chosen)
    for (where, op, k), value in zip(FORMS[chosen], free):
        if where in DIRECTIONS:
            if (where, op) in own:
                bounds[(where, op)] = (0.0, float(value))
        else:
            terms.setdefault((where, op), [0.0, 0.0, 0.0])[k] = float(value)
    return DeviceFit(
        {d: (0.0, float(g)) for d, g in zip(DIRECTIONS, generic)},
        {dom: (t[0], t[1], t[2]) for (dom, op), t in terms.items() if not op},
        tuple(nets),
        len(obs),
        chosen,
        float(sol[-1]),
        {key: (t[0], t[1], t[2]) for key, t in terms.items() if key[1]},
        bounds,
        pool,
        tuple(float(v) for v in x),
        identified,
    )


def _design(obs: Sequence[Observation], layers_of: Mapping[str, Sequence[LayerInfo]]) -> np.ndarray:
    """:func:`device_features` of every observation, then minus its overhead weight (the call
    overhead's column)."""
    feats = np.stack([device_features(layers_of[o.network], o.bits) for o in obs])
    return np.concatenate([feats, -np.array([[o.overhead_weight] for o in obs])], axis=1)


def _own_boundaries(feats: np.ndarray, form: str) -> set[tuple[str, str]]:
    """The (direction, consumer op) boundary terms of ``form`` that some observation identifies;
    boundaries into any other op are priced by the direction's shared term."""
    terms = [(d, op) for d, op, _ in FORMS[form] if d in DIRECTIONS]
    return {(d, op) for d, op in terms if np.any(feats[:, _boundary_column(d, op) + 1] != 0.0)}


def _boundary_column(d: str, op: str) -> int:
    """Index of the count column of (direction, consumer op) within :func:`boundary_features`."""
    return 2 * (DIRECTIONS.index(d) * len(OP_KINDS) + OP_KINDS.index(op))


def lono_error(obs: Sequence[Observation], feats: np.ndarray, form: str, max_overhead_ms: float = 0.0) -> float:
    """RMS relative error of each network predicted by terms fitted on the others only."""
    nets = sorted({o.network for o in obs})
    errs: list[float] = []
    for net in nets:
        mine = np.array([o.network == net for o in obs])
        if mine.all():
            continue
        sol = _solve([o for o, m in zip(obs, mine) if not m], feats[~mine], form, max_overhead_ms)[0]
        errs += [(o.layer_sum_ms + float(f @ sol)) / o.measured_ms - 1.0 for o, f in zip(obs, feats) if o.network == net]
    return float(np.sqrt(np.mean(np.square(errs)))) if errs else math.inf


def _solve(
    obs: Sequence[Observation],
    feats: np.ndarray,
    form: str,
    max_overhead_ms: float = 0.0,
    fallback: np.ndarray | None = None,
    prior_weight: float = 0.0,
    floor: tuple[Sequence[Observation], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-negative relative least squares of ``measured - layer sum`` on the form's columns
    (a fixed per-layer part, where the form has one, may be negative; the call overhead, the
    last column, lies in [0, ``max_overhead_ms``]). Returns the solution in :func:`device_features`
    columns (then the overhead) and the free columns: each direction's shared per-element
    boundary cost (in :data:`DIRECTIONS` order), the max-pool cost per element (every form has
    it), the form's own terms in :data:`FORMS` order, the overhead; then how many of those the
    observations identify. A column no observation has stays 0 (nothing identifies it), or takes
    ``fallback``'s value (free columns of the same form); with ``prior_weight`` > 0 the others are
    also pulled toward ``fallback``'s: a penalty row per column, scaled by the column's RMS
    relative effect on the predictions, so the weight counts observations whatever the unit.
    ``floor`` (configurations and their :func:`_design` rows) bounds those configurations'
    predictions below by their ``measured_ms``."""
    n_b = 2 * len(DIRECTIONS) * len(OP_KINDS)
    n_d = len(DIRECTIONS) + 1  # the directions' shared terms, then the max-pool term
    spread = np.zeros((feats.shape[1] - 1, n_d + len(FORMS[form])))  # free column -> the feature columns it prices
    spread[feats.shape[1] - 2, n_d - 1] = 1.0  # pool elements: the last feature column
    own = _own_boundaries(feats, form)
    for i, d in enumerate(DIRECTIONS):  # boundaries: per element only; a direction's own column for the other ops
        for op in OP_KINDS:
            if (d, op) not in own:
                spread[_boundary_column(d, op) + 1, i] = 1.0
    for j, (where, op, k) in enumerate(FORMS[form]):
        if where in DIRECTIONS:
            if (where, op) in own:
                spread[_boundary_column(where, op) + 1, n_d + j] = 1.0
            continue
        for o in OP_KINDS if not op else (op,):
            spread[n_b + _layer_column(where, o, k), n_d + j] = 1.0
    design = np.concatenate([feats[:, :-1] @ spread, feats[:, -1:]], axis=1)
    lo = np.concatenate([np.zeros(n_d), [-np.inf if k == 0 and w in DOMAINS else 0.0 for w, _, k in FORMS[form]], [0.0]])
    hi = np.concatenate([np.full(design.shape[1] - 1, np.inf), [max_overhead_ms]])
    active = np.any(design != 0.0, axis=0)
    active[-1] = max_overhead_ms > 0
    meas = np.array([o.measured_ms for o in obs])
    target = 1.0 - np.array([o.layer_sum_ms for o in obs]) / meas
    x = np.zeros(design.shape[1])
    if fallback is not None:
        x[~active] = fallback[~active]
    rest = target - design[:, ~active] @ x[~active] / meas
    a = design[:, active] / meas[:, None]
    if fallback is not None and prior_weight > 0.0:
        pull = np.sqrt(prior_weight) * np.diag(np.sqrt(np.mean(a**2, axis=0)))
        a, rest = np.concatenate([a, pull]), np.concatenate([rest, pull @ fallback[active]])
    g = h = None
    if floor is not None:
        at = np.array([o.measured_ms for o in floor[0]])
        rows = np.concatenate([floor[1][:, :-1] @ spread, floor[1][:, -1:]], axis=1) / at[:, None]
        h = 1.0 - np.array([o.layer_sum_ms for o in floor[0]]) / at - rows[:, ~active] @ x[~active]
        g = rows[:, active]
    x[active] = _bounded_lsq(a, rest, lo[active], hi[active], g, h)
    sol = np.zeros(feats.shape[1])
    sol[:-1] = spread @ x[:-1]
    sol[-1] = x[-1]
    return sol, x, int(active.sum())


def fit_set(family: str, families: Mapping[str, str]) -> list[str]:
    """The networks (``families``: name -> :func:`haq.tables.schema.network_family`) whose
    measurements fit the device terms that price a network of ``family``.

    A dense network's terms come from the dense networks alone (where there are any): fitted
    beside MobileNet-like networks, the shared per-element and call terms price dense networks
    far off. Leaving one network out in ``bench/tables.py`` on a run that did not choose this
    rule, ResNet-20 had 0 % of its checks within ±10 % (RMSPE 24.7 %) from the shared terms and
    75 % (8.8 %) from the dense networks' own, the digits MLP 19 % (27.0 %) and 50 % (16.5 %).
    A depthwise network's come from every network: the dense ones identify the boundary and
    call terms it shares (on depthwise networks alone, MobileNetV2's leave-one-out fell from 88 %
    to 31 % within ±10 % on the run that chose the rule).
    """
    dense = sorted(name for name, f in families.items() if f == "dense")
    return dense if family == "dense" and dense else sorted(families)


def fit_correction(
    raw_ms: Sequence[float],
    measured_ms: Sequence[float],
    network: str,
    fingerprint: str,
    scale_bounds: tuple[float, float] = SCALE_BOUNDS,
    cheapest: tuple[float, float] | None = None,
) -> Correction:
    """``measured ≈ scale * raw + offset`` (relative least squares), ``scale`` within ``scale_bounds``.

    The offset-only form (``scale = 1``) and the bounded affine form are both fitted; the one
    with the smaller leave-one-out RMS relative error is returned (offset-only on ties and
    when there are too few points to cross-validate a slope). ``raw_ms`` already includes
    the device terms (:func:`fit_device`), so the correction is what this network adds to them.
    With ``cheapest`` = (the network's cheapest raw cost, a floor), the chosen form is fitted with
    that configuration corrected to at least the floor (a positive scale keeps it the cheapest).
    """
    raw, meas = np.asarray(raw_ms, float), np.asarray(measured_ms, float)
    if len(raw) < 2 or not (np.all(np.isfinite(raw)) and np.all(np.isfinite(meas)) and np.all(meas > 0)):
        raise TableError(f"correction for {network} needs >= 2 finite measurements with positive times, got {len(raw)}")
    lo_s, hi_s = scale_bounds
    if not 0.0 < lo_s <= 1.0 <= hi_s:
        raise TableError(f"scale bounds must satisfy 0 < low <= 1 <= high, got {scale_bounds}")
    affine = len(raw) >= 3 and _loo_error(raw, meas, scale_bounds) < _loo_error(raw, meas, (1.0, 1.0))
    best = _affine(raw, meas, scale_bounds if affine else (1.0, 1.0), cheapest)
    return Correction(
        fingerprint=fingerprint,
        network=network,
        metric="latency",
        scale=float(best[0]),
        offset=float(best[1]),
        fitted_on=len(raw),
    )


def _affine(
    raw: np.ndarray, meas: np.ndarray, scale_bounds: tuple[float, float], cheapest: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Relative least squares of ``scale * raw + offset`` with ``scale`` in ``scale_bounds`` and, with
    ``cheapest`` = (raw cost, floor), ``scale * raw cost + offset >= floor``."""
    if scale_bounds[0] == scale_bounds[1]:
        offset = _offset_only(raw, meas, scale_bounds[0])
        return scale_bounds[0], offset if cheapest is None else max(offset, cheapest[1] - scale_bounds[0] * cheapest[0])
    a = np.stack([raw / meas, 1.0 / meas], axis=1)
    g = h = None
    if cheapest is not None:
        g, h = np.array([[cheapest[0] / cheapest[1], 1.0 / cheapest[1]]]), np.ones(1)
    sol = _bounded_lsq(a, np.ones(len(raw)), np.array([scale_bounds[0], -np.inf]), np.array([scale_bounds[1], np.inf]), g, h)
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


def _bounded_lsq(
    a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: np.ndarray | None = None, h: np.ndarray | None = None
) -> np.ndarray:
    """``lsq_linear`` with column scaling (features span ms to element counts); with ``g`` and
    ``h``, also ``g @ x >= h``: where the bounded solution breaks that, a quadratic program
    (SLSQP) started from it, so a fit whose floors hold is exactly the unconstrained one; where that
    finds no solution within the floors, the bounded one."""
    col = np.maximum(np.abs(a).max(axis=0), 1e-12)
    lo_s, hi_s = lo * col, hi * col
    x = _lsq(a / col, b, lo_s, hi_s)
    if g is None or h is None or np.all(g @ (x / col) >= h - FLOOR_SLACK):
        return x / col
    a_s, g_s = a / col, g / col
    res = minimize(
        lambda z: 0.5 * float(np.sum((a_s @ z - b) ** 2)),
        x,
        jac=lambda z: a_s.T @ (a_s @ z - b),
        bounds=[(None if math.isinf(lo_i) else lo_i, None if math.isinf(hi_i) else hi_i) for lo_i, hi_i in zip(lo_s, hi_s)],
        constraints=[{"type": "ineq", "fun": lambda z: g_s @ z - h, "jac": lambda z: g_s}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    if not np.all(g_s @ res.x >= h - FLOOR_SLACK):
        return x / col  # the caller finds the floor still broken and says so
    return np.clip(res.x, lo_s, hi_s) / col


def _lsq(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``lsq_linear``'s trust-region solution. Where a reflected step has a zero component and an
    infinite stride, trf's step selection multiplies 0 by inf, warns "invalid value", and drops that
    candidate step: on 20,000 random bounded fits of this module's shapes it warned on 255, every
    result finite and within 5e-11 of the exact (bvls) cost. So the warning is silenced here, and
    a result that is not finite anyway is solved again with bvls."""
    with np.errstate(invalid="ignore"):
        x = lsq_linear(a, b, bounds=(lo, hi)).x
    if np.all(np.isfinite(x)):
        return x
    return lsq_linear(a, b, bounds=(lo, hi), method="bvls").x


def _check_observations(obs: Sequence[Observation]) -> None:
    for o in obs:
        if not (np.isfinite(o.layer_sum_ms) and np.isfinite(o.measured_ms) and o.measured_ms > 0 and o.layer_sum_ms >= 0):
            raise TableError(
                f"observation of {o.network} has layer sum {o.layer_sum_ms!r} ms and measurement {o.measured_ms!r} ms; "
                "both must be finite, the measurement > 0"
            )
