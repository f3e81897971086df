"""Policy evaluation behind one interface: a :class:`QuantPolicy` in, :class:`PolicyMetrics` out.

The environment, the baselines and ``haq evaluate`` all score policies through an
:class:`Evaluator`, so a future pool of parallel workers only has to implement ``evaluate``.
Three real evaluators ship, each a :class:`QuantizingEvaluator` (quantize a copy, calibrate,
measure) that differ only in their hooks:

* :class:`CheapEvaluator` — calibrated post-training quantization, clean accuracy on the fixed
  held-out subset. No fine-tuning, no attacks: fast enough for tests.
* :class:`ScreenEvaluator` — the cheap evaluation plus accuracy under PGD examples crafted
  once on the float model and transferred: a robust signal for one more forward pass over
  ``robust_samples`` images, what a multi-fidelity search screens with by default.
* :class:`FullEvaluator` — adds a short Defensive-Quantization fine-tune
  (``haq.robust.dq_finetune_``) and worst-case robust accuracy (``haq.robust.robust_accuracy``,
  per-sample worst case over white-box and transfer attacks, so gradient masking cannot pass
  for robustness).

Both measure on the first ``val_samples`` images of the **validation** split, in eval mode, so
every policy and the float reference are compared on the same images. Costs come from the
device table, except latency when the caller hands in another :class:`CostSource` (hardware
feedback): evaluators receive cost sources, they never build them.
"""

from __future__ import annotations

import time
from typing import Iterable, Protocol, Sequence

import torch
from torch import nn

from haq.core.errors import ConfigError
from haq.core.types import BitPair
from haq.evaluation.config import EvalConfig
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.evaluation.ptq import quantized_copy
from haq.quant import LayerInfo, QuantPolicy, model_size_bits
from haq.robust import AttackConfig, DQConfig, craft, dq_finetune_, report_from_examples, robust_accuracy
from haq.tables.protocols import CostSource, DeviceTable
from haq.training import correct_mask, mask_accuracy
from haq.workload import Workload

PolicyKey = tuple[tuple[str, int, int], ...]


class Evaluator(Protocol):
    """Scores policies of one workload on one device; ``reference`` is the float model."""

    @property
    def reference(self) -> ReferenceMetrics: ...

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics: ...

    def evaluate_many(self, policies: Sequence[QuantPolicy]) -> list[PolicyMetrics]:
        """Metrics of each policy, in order: a worker pool evaluates them concurrently."""
        ...


class PolicyCosts:
    """Costs of a policy: latency from ``latency_source`` (table or measured), the rest from the table."""

    def __init__(self, layers: Sequence[LayerInfo], table: DeviceTable, latency_source: CostSource) -> None:
        self._layers = list(layers)
        self._table = table
        self._latency = latency_source

    def costs(self, policy: QuantPolicy) -> tuple[float, float | None, int]:
        """(latency ms, energy mJ or ``None`` without an energy metric, weight bits)."""
        latency = float(self._latency.policy_cost(self._layers, policy, "latency"))
        energy = float(self._table.policy_cost(self._layers, policy, "energy")) if "energy" in self._table.metrics else None
        return latency, energy, model_size_bits(self._layers, policy)


class QuantizingEvaluator:
    """Quantize a copy under the policy, calibrate, then measure; subclasses fill two hooks.

    ``latency_source`` replaces the table for latency only (``None``: the table prices it too).
    """

    def __init__(self, workload: Workload, table: DeviceTable, cfg: EvalConfig, latency_source: CostSource | None = None) -> None:
        self._wl = workload
        self._cfg = cfg
        self._costs = PolicyCosts(workload.layers, table, table if latency_source is None else latency_source)
        self._x, self._y = workload.data.subset("val", cfg.val_samples)
        self._prepare()
        self._reference: ReferenceMetrics | None = None

    @property
    def reference(self) -> ReferenceMetrics:
        """The float model, measured the same way as every policy: the first time it is asked for
        (a worker of a pool evaluates policies and is asked for it only when the driver needs it;
        with the full evaluator it costs about one evaluation)."""
        if self._reference is None:
            clean = correct_mask(self._wl.model, self._x, self._y, self._wl.device)
            self._reference = ReferenceMetrics(mask_accuracy(clean), self._robust_accuracy(self._wl.model, clean))
        return self._reference

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        """Quantize, calibrate, fine-tune (hook), measure accuracies and price the policy."""
        start = time.perf_counter()
        policy.check_layers(self._wl.layers)
        q = quantized_copy(self._wl.model, policy, self._wl.data, self._wl.device, self._cfg.calib_batches, self._cfg.batch_size)
        self._finetune(q)
        clean = correct_mask(q, self._x, self._y, self._wl.device)
        robust_acc = self._robust_accuracy(q, clean)
        latency, energy, size = self._costs.costs(policy)
        return PolicyMetrics(mask_accuracy(clean), robust_acc, latency, energy, size, time.perf_counter() - start)

    def evaluate_many(self, policies: Sequence[QuantPolicy]) -> list[PolicyMetrics]:
        """One after the other: this evaluator runs in one process."""
        return [self.evaluate(p) for p in policies]

    def _prepare(self) -> None:
        """Work done once, on the held-out images, before the float reference is measured; nothing by default."""

    def _finetune(self, model: nn.Module) -> None:
        """Adjust the calibrated copy before it is measured; nothing by default."""

    def _robust_accuracy(self, model: nn.Module, clean: torch.Tensor) -> float | None:
        """Worst-case robust accuracy (``clean``: the model's correctness on the held-out images,
        whose prefix the attacks use); ``None`` for an evaluator that runs no attacks."""
        return None


class CheapEvaluator(QuantizingEvaluator):
    """Calibrated post-training quantization: clean accuracy only (real, but no fine-tune or attacks)."""


class ScreenEvaluator(CheapEvaluator):
    """Calibrated PTQ, clean accuracy, and accuracy on PGD examples crafted once on the float
    model (``robust_samples`` of the held-out images) and shown to every policy: no fine-tune,
    no attack per policy, one more forward pass over those images (the adversarial one; the
    per-sample worst case reuses the clean pass of the accuracy).

    Why: the clean accuracy alone cannot see what decides a policy's robust term, and a
    multi-fidelity search screening with it reached a median final test reward of +0.546 on
    the digits MLP against +0.709 with this screen (full-only search: +0.825; CNN
    +1.101 / +1.124 / +1.199; ``bench/search_quality.py``, 100 evaluations, 10 seeds).
    Transferred examples are the attack low-bit layers cannot mask, and the full evaluator's
    worst case includes the same attack.
    """

    ATTACK = "transfer_pgd"
    _examples: torch.Tensor

    def _prepare(self) -> None:
        n, wl = self._cfg.robust_samples, self._wl
        config = attack_config(self._cfg, wl.config.seed)
        self._examples = craft(
            self.ATTACK, wl.model, self._x[:n], self._y[:n], config, wl.device, wl.data.value_range, source_model=wl.model
        )

    def _robust_accuracy(self, model: nn.Module, clean: torch.Tensor) -> float | None:
        n = len(self._examples)
        examples: dict[str, torch.Tensor] = {self.ATTACK: self._examples}
        report = report_from_examples(
            model, self._x[:n], self._y[:n], examples, self._wl.device, self._cfg.attack_eps, clean=clean[:n]
        )
        return float(report.worst_case)


class FullEvaluator(QuantizingEvaluator):
    """Calibrate, DQ fine-tune, then clean and worst-case robust accuracy (HAQ + Defensive Quantization)."""

    def _finetune(self, model: nn.Module) -> None:
        if self._cfg.finetune_epochs > 0:
            dq_finetune_(model, self._wl.data, dq_config(self._cfg, self._wl.config.seed), self._wl.device)

    def _robust_accuracy(self, model: nn.Module, clean: torch.Tensor) -> float | None:
        n = self._cfg.robust_samples
        report = robust_accuracy(
            model,
            self._x[:n],
            self._y[:n],
            self._cfg.attacks,
            attack_config(self._cfg, self._wl.config.seed),
            self._wl.device,
            self._wl.data.value_range,
            source_model=self._wl.model,
            clean=clean[:n],
        )
        return float(report.worst_case)


def attack_config(cfg: EvalConfig, seed: int) -> AttackConfig:
    """The robustness attacks' settings for an evaluation seeded like its workload."""
    return AttackConfig(eps=cfg.attack_eps, pgd_steps=cfg.attack_steps, seed=seed)


def dq_config(cfg: EvalConfig, seed: int) -> DQConfig:
    """The Defensive-Quantization fine-tune's settings for an evaluation seeded like its workload."""
    return DQConfig(
        beta=cfg.dq_beta,
        epochs=cfg.finetune_epochs,
        lr=cfg.finetune_lr,
        batch_size=cfg.batch_size,
        max_batches=cfg.finetune_batches,
        seed=seed,
    )


EVALUATOR_KINDS: dict[str, type[QuantizingEvaluator]] = {
    "cheap": CheapEvaluator,
    "screen": ScreenEvaluator,
    "full": FullEvaluator,
}


def build_evaluator(
    workload: Workload, table: DeviceTable, cfg: EvalConfig, latency_source: CostSource | None = None
) -> QuantizingEvaluator:
    """The evaluator ``cfg.kind`` names (the one place the cheap / full choice is made), uncached.

    ``latency_source`` is what the caller built to price latency (a measuring cost source with
    hardware feedback); ``None`` prices it from ``table``.
    """
    if cfg.kind not in EVALUATOR_KINDS:
        raise ConfigError(
            f"evaluator '{cfg.kind}' combines two evaluators during a search; "
            f"score one policy with {' or '.join(EVALUATOR_KINDS)}"
        )
    return EVALUATOR_KINDS[cfg.kind](workload, table, cfg, latency_source)


def policy_key(policy: QuantPolicy) -> PolicyKey:
    """Hashable identity of a policy's bits (metadata ignored)."""
    return pairs_key((n, (b.w_bits, b.a_bits)) for n, b in policy.layers.items())


def pairs_key(named: Iterable[tuple[str, BitPair]]) -> PolicyKey:
    """:func:`policy_key` of the policy giving each named layer its (weight, activation) pair,
    without building it (a proposal checked before it is stepped)."""
    return tuple(sorted((n, int(w), int(a)) for n, (w, a) in named))


class CachedEvaluator:
    """Memoizes another evaluator: a policy seen before is not fine-tuned or attacked again."""

    def __init__(self, inner: Evaluator) -> None:
        self._inner = inner
        self._cache: dict[PolicyKey, PolicyMetrics] = {}
        self.hits = 0

    @property
    def reference(self) -> ReferenceMetrics:
        """The inner evaluator's float reference."""
        return self._inner.reference

    def __contains__(self, policy: QuantPolicy) -> bool:
        return policy_key(policy) in self._cache

    def remember(self, policy: QuantPolicy, metrics: PolicyMetrics) -> None:
        """Pre-load a known result (a resumed run re-reads its episodes)."""
        self._cache[policy_key(policy)] = metrics

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        """The cached result, or the inner evaluator's (then cached)."""
        key = policy_key(policy)
        if key in self._cache:
            self.hits += 1
            return self._cache[key]
        metrics = self._inner.evaluate(policy)
        self._cache[key] = metrics
        return metrics

    def evaluate_many(self, policies: Sequence[QuantPolicy]) -> list[PolicyMetrics]:
        """Cached results, and the misses evaluated as one batch by the inner evaluator (a policy
        repeated within the batch is evaluated once)."""
        keys = [policy_key(p) for p in policies]
        misses: dict[PolicyKey, QuantPolicy] = {}
        for key, policy in zip(keys, policies):
            if key in self._cache or key in misses:
                self.hits += 1
            else:
                misses[key] = policy
        if misses:
            for key, metrics in zip(misses, self._inner.evaluate_many(list(misses.values()))):
                self._cache[key] = metrics
        return [self._cache[key] for key in keys]


__all__ = [
    "EVALUATOR_KINDS",
    "CachedEvaluator",
    "CheapEvaluator",
    "Evaluator",
    "FullEvaluator",
    "PolicyCosts",
    "QuantizingEvaluator",
    "ScreenEvaluator",
    "attack_config",
    "build_evaluator",
    "dq_config",
    "policy_key",
]
