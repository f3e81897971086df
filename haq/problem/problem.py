"""A search problem: the workload, the device table, the resolved budget and the evaluator.

Built once from an :class:`~haq.search.config.EnvConfig` and shared by the environment, the
baselines and the run loop, so all of them score a policy identically (:meth:`SearchProblem.score`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

import latency_tables
from haq.core.errors import ConfigError
from haq.core.types import BitPair, Log
from haq.evaluation.evaluators import CachedEvaluator, PolicyMetrics, make_evaluator
from haq.problem.budget import (
    Budget,
    BudgetModel,
    DeviceTable,
    build_budget_model,
)
from haq.problem.config import EnvConfig
from haq.problem.reward import compute_reward
from haq.quant import LayerBits, QuantPolicy
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
            raise ConfigError(f"expected {len(self.workload.layers)} (w, a) pairs, one per layer, got {len(pairs)}")
        stamp = {"model": self.config.workload.model, "table": self.table.name, "budget": self.budget.to_dict(), **(meta or {})}
        return QuantPolicy({n: LayerBits(w, a) for n, (w, a) in zip(self.layer_names, pairs)}, stamp)

    def score(self, policy: QuantPolicy) -> Scored:
        """Evaluate (cached) and compute the reward."""
        metrics = self.evaluator.evaluate(policy)
        return Scored(metrics, compute_reward(metrics, self.evaluator.reference, self.budget, self.config.reward))


def parse_torch_device(name: str) -> torch.device:
    """A torch device from a string, with a one-line error instead of a CUDA traceback."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"torch device '{name}' is not valid; try cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"torch device '{name}' asked for, but no CUDA GPU is available here; use cpu")
    return dev


def build_problem(
    cfg: EnvConfig,
    cache_dir: Path | None = None,
    log: Log | None = None,
    table: DeviceTable | None = None,
    feedback_cache: Path | None = None,
) -> SearchProblem:
    """Load (or train, cached) the model, load the table, resolve the budget, build the evaluator.

    ``table`` overrides ``cfg.table`` with an already-loaded table (tests, transfer);
    ``feedback_cache`` keeps hardware-feedback measurements (a JSON file).
    """
    device = parse_torch_device(cfg.torch_device)
    workload = load_workload(cfg.workload, device, cache_dir=cache_dir, log=log)
    tab = table if table is not None else latency_tables.load(cfg.table)
    budget_model = build_budget_model(
        workload.layers, tab, cfg.budget.metric, cfg.budget.ratio, cfg.budget.absolute,
        cfg.min_bits, cfg.max_bits, cfg.pin_first_last,
    )
    return SearchProblem(cfg, workload, tab, budget_model, make_evaluator(workload, tab, cfg.evaluation, feedback_cache, log))
