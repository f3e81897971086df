"""Per-layer quantization sensitivity: a second-order estimate of the loss each bit width adds.

HAWQ-V3 weighs ‖Q(W)−W‖² by the Hessian trace per parameter. We use the diagonal empirical
Fisher instead (the expected squared gradient, the Gauss-Newton approximation of the Hessian
near a trained minimum), per element, which needs one backward pass per batch instead of
Hutchinson's many Hessian-vector products:

* weights: ``½ Σ_i F_i (Q_b(w)_i − w_i)²`` with ``F_i`` the per-sample mean of ``g_i²``;
* input activations: ``½ E_x Σ_j g_j² (Q_b(x)_j − x_j)²`` with ``g`` the gradient of that
  sample's loss with respect to this layer's input, and the clip ``alpha`` set as
  calibration sets it (the largest observed magnitude).

Both terms estimate an increase of the cross-entropy loss, so they add across layers and
between weights and activations, which is what the ILP and the greedy baseline need.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from haq.core.errors import ConfigError, DataError, HaqError
from haq.core.validate import choice, count
from haq.data import DataSplits
from haq.quant import (
    FLOAT_BITS,
    MAX_BITS,
    MIN_BITS,
    LayerInfo,
    quantize_activation,
    quantize_weight,
)
from haq.training import torch_threads

BITS = tuple(range(MIN_BITS, MAX_BITS + 1))


@dataclass(frozen=True)
class LayerSensitivity:
    """Estimated loss increase of one layer at each weight and input-activation bit width."""

    weight: Mapping[int, float]
    activation: Mapping[int, float]

    def error(self, w_bits: int, a_bits: int) -> float:
        """Estimated loss increase at ``(w_bits, a_bits)``; float (32 bits) adds nothing."""
        if w_bits not in self.weight or a_bits not in self.activation:
            raise ConfigError(f"no sensitivity for bits ({w_bits}, {a_bits}); valid: {MIN_BITS}..{MAX_BITS} or {FLOAT_BITS}")
        return self.weight[w_bits] + self.activation[a_bits]


@dataclass(frozen=True)
class Sensitivity:
    """Sensitivities of every quantizable layer, by fully-qualified name, and the estimator that
    produced them (``fisher`` or ``measured``, see :data:`ESTIMATORS`)."""

    layers: Mapping[str, LayerSensitivity]
    samples: int
    estimator: str = "fisher"

    def error(self, name: str, w_bits: int, a_bits: int) -> float:
        """Estimated loss increase of layer ``name`` at ``(w_bits, a_bits)``."""
        if name not in self.layers:
            raise ConfigError(f"no sensitivity for layer '{name}'; known: {sorted(self.layers)[:8]}")
        return self.layers[name].error(w_bits, a_bits)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (kept in a run directory for inspection, and in the sensitivity cache)."""
        return {
            "estimator": self.estimator,
            "samples": self.samples,
            "layers": {
                n: {
                    "weight": {str(b): v for b, v in s.weight.items()},
                    "activation": {str(b): v for b, v in s.activation.items()},
                }
                for n, s in self.layers.items()
            },
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Sensitivity:
        """The estimate :meth:`to_dict` wrote, checked (it comes from disk): one
        :class:`~haq.core.errors.DataError` line naming what is wrong and what is valid."""
        if not isinstance(doc, dict) or set(doc) != {"estimator", "samples", "layers"}:
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise DataError(f"a sensitivity needs exactly the fields estimator, samples, layers; got {keys}")
        estimator, samples, layers = doc["estimator"], doc["samples"], doc["layers"]
        if estimator not in RESOLVED:
            raise DataError(f"sensitivity estimator {estimator!r} is not one of {', '.join(RESOLVED)}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise DataError(f"sensitivity samples must be a positive integer, got {samples!r}")
        if not isinstance(layers, dict) or not layers:
            raise DataError("sensitivity layers must be a non-empty object of layer name -> weight / activation errors")
        return cls({str(n): _layer_from_dict(n, v) for n, v in layers.items()}, samples, estimator)


def _layer_from_dict(name: str, doc: Any) -> LayerSensitivity:
    """One layer's errors as :meth:`Sensitivity.to_dict` writes them: every width of
    :data:`BITS` and float, each a finite number."""
    if not isinstance(doc, dict) or set(doc) != {"weight", "activation"}:
        raise DataError(f"sensitivity of layer '{name}' needs exactly the fields weight, activation")
    widths = {str(b) for b in (*BITS, FLOAT_BITS)}
    parts: dict[str, dict[int, float]] = {}
    for part in ("weight", "activation"):
        errors = doc[part]
        if not isinstance(errors, dict) or set(errors) != widths:
            raise DataError(
                f"sensitivity of layer '{name}' ({part}) needs one error per width {', '.join(sorted(widths, key=int))}"
            )
        bad = [b for b, v in errors.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
        if bad:
            raise DataError(f"sensitivity of layer '{name}' ({part}) at {bad[0]} bits is {errors[bad[0]]!r}, not a finite number")
        parts[part] = {int(b): float(v) for b, v in errors.items()}
    return LayerSensitivity(parts["weight"], parts["activation"])


ESTIMATORS = ("auto", "fisher", "measured")
"""How per-layer sensitivities are estimated: the Fisher-weighted quantization error of the clean
loss (:func:`estimate_sensitivity`), the loss each layer's quantization adds measured one layer at
a time, on clean and adversarial images as the reward weighs them
(:mod:`haq.problem.measured_sensitivity`), or ``auto``: measured when the reward has a robustness
term and the attack leaves the float model some accuracy, Fisher otherwise
(:func:`haq.problem.reward_sensitivity.resolved_estimator`)."""
RESOLVED = ESTIMATORS[1:]
"""What an estimate was made by: ``auto`` resolves to one of these before anything is estimated."""


@dataclass(frozen=True)
class SensitivityConfig:
    """How to estimate sensitivities.

    samples: training images used (the first ``samples`` of the train split).
    batch_size: images per backward (Fisher) or forward (measured) pass.
    estimator: one of :data:`ESTIMATORS`.
    """

    samples: int = 256
    batch_size: int = 32
    estimator: str = "auto"

    def __post_init__(self) -> None:
        count("sensitivity samples", self.samples)
        count("sensitivity batch_size", self.batch_size)
        choice("sensitivity estimator", self.estimator, ESTIMATORS)


def layer_modules(model: nn.Module, layers: Sequence[LayerInfo]) -> dict[str, nn.Module]:
    """The modules of ``layers`` in ``model``, by name (one line naming those it lacks)."""
    named = dict(model.named_modules())
    missing = [layer.name for layer in layers if layer.name not in named]
    if missing:
        raise HaqError(f"model has no layer(s) {missing[:5]}; it is not the model the layers were discovered on")
    return {layer.name: named[layer.name] for layer in layers}


def hook_inputs(
    modules: Mapping[str, nn.Module],
    fn: Callable[[str, torch.Tensor], torch.Tensor | None],
) -> list[torch.utils.hooks.RemovableHandle]:
    """Call ``fn(name, input)`` before each layer runs; a returned tensor replaces the input."""

    def make(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...] | None]:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
            out = fn(name, inputs[0])
            return None if out is None else (out, *inputs[1:])

        return hook

    return [m.register_forward_pre_hook(make(n)) for n, m in modules.items()]


@torch.no_grad()
def input_ranges(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches: list[torch.Tensor],
) -> dict[str, tuple[float, bool]]:
    """(alpha, signed) of each layer's input, as calibration would set them."""
    lo: dict[str, float] = {n: float("inf") for n in modules}
    hi: dict[str, float] = {n: float("-inf") for n in modules}

    def sink(name: str, x: torch.Tensor) -> torch.Tensor | None:
        lo[name] = min(lo[name], float(x.amin()))
        hi[name] = max(hi[name], float(x.amax()))
        return None

    handles = hook_inputs(modules, sink)
    try:
        for xb in batches:
            model(xb)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, tuple[float, bool]] = {}
    for n in modules:
        signed = lo[n] < 0.0
        out[n] = (max(abs(lo[n]), hi[n]) if signed else max(hi[n], 1e-8), signed)
    return out


def estimate_sensitivity(
    model: nn.Module,
    layers: list[LayerInfo],
    data: DataSplits,
    device: torch.device,
    cfg: SensitivityConfig = SensitivityConfig(),
) -> Sensitivity:
    """Fisher-weighted quantization error of every layer at every bit width (model untouched)."""
    net = copy.deepcopy(model).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(True)
    modules = layer_modules(net, layers)
    x_all, y_all = data.subset("train", cfg.samples)
    batches = list(zip(x_all.to(device).split(cfg.batch_size), y_all.to(device).split(cfg.batch_size)))
    with torch_threads(1):
        ranges = input_ranges(net, modules, [xb for xb, _ in batches])
        w_err = {n: {b: 0.0 for b in BITS} for n in modules}
        a_err = {n: {b: 0.0 for b in BITS} for n in modules}
        captured: dict[str, torch.Tensor] = {}

        def capture(name: str, x: torch.Tensor) -> torch.Tensor:
            alias = x.view_as(x)  # a node of its own: layers sharing one input get their own gradient
            alias.retain_grad()
            captured[name] = alias
            return alias

        handles = hook_inputs(modules, capture)
        try:
            for xb, yb in batches:
                captured.clear()
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(xb.detach().clone().requires_grad_(True)), yb, reduction="sum").backward()
                for name, m in modules.items():
                    _accumulate(name, m, captured.get(name), ranges[name], w_err[name], a_err[name])
        finally:
            for h in handles:
                h.remove()
    n = len(y_all)
    return Sensitivity(
        {
            name: LayerSensitivity(
                weight={**{b: 0.5 * v / n for b, v in w_err[name].items()}, FLOAT_BITS: 0.0},
                activation={**{b: 0.5 * v / n for b, v in a_err[name].items()}, FLOAT_BITS: 0.0},
            )
            for name in modules
        },
        samples=n,
    )


@torch.no_grad()
def _accumulate(
    name: str,
    module: nn.Module,
    x: torch.Tensor | None,
    rng: tuple[float, bool],
    w_err: dict[int, float],
    a_err: dict[int, float],
) -> None:
    """Add one batch's Fisher-weighted squared errors (divided by the sample count at the end).

    With a summed loss the weight gradient is the batch sum of per-sample gradients; near a
    minimum (mean gradient ≈ 0) its square, summed over batches, estimates Σ_i g_i² over all
    samples. The input gradient is per sample already.
    """
    weight = module.weight  # type: ignore[union-attr]
    if weight.grad is None or x is None or x.grad is None:
        raise HaqError(f"layer '{name}' received no gradient; is it used in the model's forward()?")
    fisher_w = weight.grad.pow(2)
    g2_x = x.grad.pow(2)
    alpha, signed = rng
    for b in BITS:
        w_err[b] += float((fisher_w * (quantize_weight(weight, b) - weight).pow(2)).sum())
        a_err[b] += float((g2_x * (quantize_activation(x, b, alpha, signed) - x).pow(2)).sum())
