"""A search problem: the workload, the device table, the resolved budget and the evaluator.

Built once from an :class:`~haq.problem.config.EnvConfig` and shared by the environment, the
baselines and the run loop, so all of them score a policy identically (:meth:`SearchProblem.score`).
This layer resolves no names: the caller hands in the device table and, with hardware feedback,
the measuring latency source (``haq.commands.problems.make_problem`` does both from a config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from haq.core.errors import ConfigError, PolicyError, UsageError
from haq.core.types import BitPair, Log
from haq.evaluation.evaluators import CachedEvaluator, build_evaluator
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.budget import Budget, BudgetModel, build_budget_model
from haq.problem.config import EnvConfig
from haq.problem.reward import compute_reward
from haq.quant import LayerBits, QuantPolicy
from haq.tables.protocols import CostSource, DeviceTable
from haq.training import parse_torch_device
from haq.workload import Workload, load_workload


@dataclass(frozen=True)
class Scored:
    """A policy's metrics and reward."""

    metrics: PolicyMetrics
    reward: float


@dataclass
class SearchProblem:
    """Everything needed to turn a per-layer bit assignment into a reward."""

    config: EnvConfig
    workload: Workload
    table: DeviceTable
    budget_model: BudgetModel
    evaluator: CachedEvaluator

    @property
    def budget(self) -> Budget:
        """The resolved budget."""
        return self.budget_model.budget

    @property
    def layer_names(self) -> list[str]:
        """Quantizable layers in execution order (one episode step each)."""
        return self.workload.layer_names

    def policy(self, pairs: Sequence[BitPair], meta: dict[str, Any] | None = None) -> QuantPolicy:
        """A policy from one (w, a) pair per layer, in layer order, stamped with provenance."""
        if len(pairs) != len(self.workload.layers):
            raise PolicyError(f"expected {len(self.workload.layers)} (w, a) pairs, one per layer, got {len(pairs)}")
        stamp = {"model": self.config.workload.model, "table": self.table.name, "budget": self.budget.to_dict(), **(meta or {})}
        return QuantPolicy({n: LayerBits(w, a) for n, (w, a) in zip(self.layer_names, pairs)}, stamp)

    def score(self, policy: QuantPolicy) -> Scored:
        """Evaluate (cached) and compute the reward."""
        metrics = self.evaluator.evaluate(policy)
        return Scored(metrics, compute_reward(metrics, self.evaluator.reference, self.budget, self.config.reward))


def build_problem(
    cfg: EnvConfig,
    *,
    table: DeviceTable,
    latency_source: CostSource | None = None,
    workload: Workload | None = None,
    cache_dir: Path | None = None,
    log: Log | None = None,
) -> SearchProblem:
    """Resolve the budget on ``table`` and build the (cached) evaluator for ``cfg``.

    ``table`` prices the budget and every metric; ``latency_source`` replaces it for the
    episode-end latency (required when ``cfg.evaluation.hardware_feedback`` is on). ``workload``
    reuses a loaded workload (one built from ``cfg.workload``, e.g. the one a measuring
    ``latency_source`` times); without it the float model is loaded (or trained, cached in
    ``cache_dir``) on ``cfg.torch_device``.
    """
    if cfg.evaluation.hardware_feedback and latency_source is None:
        raise ConfigError(
            "hardware_feedback measures every policy, but no measuring latency source was given; "
            "build the problem with haq.commands.problems.make_problem"
        )
    if workload is None:
        workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
    elif workload.config != cfg.workload:
        raise UsageError(f"the given workload is {workload.config.model}, loaded from another workload config than the problem's")
    budget_model = build_budget_model(
        workload.layers, table, cfg.budget.metric, cfg.budget.ratio, cfg.budget.absolute,
        cfg.min_bits, cfg.max_bits, cfg.pin_first_last,
    )
    evaluator = CachedEvaluator(build_evaluator(workload, table, cfg.evaluation, latency_source))
    return SearchProblem(cfg, workload, table, budget_model, evaluator)


__all__ = ["Scored", "SearchProblem", "build_problem"]
