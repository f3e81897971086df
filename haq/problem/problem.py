"""A search problem: the workload, the device table, the resolved budget and the evaluator.

Built once from an :class:`~haq.problem.config.EnvConfig` and shared by the environment, the
baselines and the run loop, so all of them score a policy identically (:meth:`SearchProblem.score`).
This layer resolves no names: the caller hands in the device table and, with hardware feedback,
the measuring latency source (``haq.jobs.problems.make_problem`` does both from a config).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from haq.core.errors import ConfigError, PolicyError, TableError, UsageError
from haq.core.types import BitPair, Log
from haq.evaluation.evaluators import CachedEvaluator, Evaluator, build_evaluator
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.problem.allocation import sensitivity_prior
from haq.problem.budget import Budget, BudgetModel, build_budget_model
from haq.problem.config import EnvConfig
from haq.problem.fidelity import FULL, FidelityScreen, Scored, seen_before
from haq.problem.pool import WorkerPool
from haq.problem.reward import compute_reward
from haq.problem.reward_sensitivity import reward_sensitivity
from haq.problem.sensitivity import Sensitivity
from haq.problem.sensitivity_store import SensitivityStore
from haq.quant import QuantPolicy
from haq.tables.protocols import CostSource, DeviceTable
from haq.training import parse_torch_device
from haq.workload import Workload, load_workload

MULTI = "multi"
EvaluatorFactory = Callable[[str], Evaluator]
"""Builds the evaluator of one kind (``cheap`` / ``full``) for a problem."""
HeldOutFactory = Callable[[str, Images, int | None], Evaluator]
"""Builds the evaluator of one kind measuring on other images than the search's (a worker pool's)."""


@dataclass
class SearchProblem:
    """Everything needed to turn a per-layer bit assignment into a reward.

    workers: how many policies :meth:`score_many` evaluates at once (the proposers batch by it);
    pool: the worker pool those evaluations run on (``None``: in-process), stopped by :meth:`close`.
    held_out_factory: the pool's evaluators on other images (:meth:`held_out`; ``None``: in-process).
    sensitivity: per-layer sensitivity estimated before the search (observation ``v1`` or the
        sensitivity action prior only).
    sensitivity_store: where sensitivity estimates are kept between runs (``None``: estimated
        every time); whoever estimates one for this problem later (a baseline, an objective agent)
        reads and keeps it there too.
    prior: the assignment actions are centred on (``EnvConfig.action_prior``), one pair per layer.
    """

    config: EnvConfig
    workload: Workload
    table: DeviceTable
    budget_model: BudgetModel
    evaluator: CachedEvaluator
    screen: FidelityScreen | None = None
    workers: int = 1
    pool: WorkerPool | None = None
    held_out_factory: HeldOutFactory | None = None
    sensitivity: Sensitivity | None = None
    prior: tuple[BitPair, ...] | None = None
    sensitivity_store: SensitivityStore | None = None

    def close(self) -> None:
        """Stop the worker pool the evaluators run on, if any (in-process evaluators need nothing)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def plan(self, episodes: int) -> None:
        """How many episodes the run logs in all: a multi-fidelity screen evaluates at most
        ``screen_max_fraction`` of them in full, and at least one (nothing to plan otherwise)."""
        if self.screen is not None:
            self.screen.allowance = max(1, math.floor(self.config.evaluation.screen_max_fraction * episodes + 1e-9))

    def held_out(self, kind: str, images: Images, seed: int | None = None) -> Evaluator:
        """The evaluator ``kind`` measuring on ``images`` instead of the search's validation images
        (the final pick's), seeded ``seed`` instead of the workload's when given, on the worker pool
        where the problem has one; latency is priced from the table, also under hardware feedback."""
        if self.held_out_factory is not None:
            return self.held_out_factory(kind, images, seed)
        return held_out_evaluator(self.workload, self.table, self.config.evaluation, kind, images, seed)

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
        return QuantPolicy.from_pairs(zip(self.layer_names, pairs), stamp)

    def reward(self, metrics: PolicyMetrics, reference: ReferenceMetrics) -> float:
        """The reward of metrics measured against ``reference`` (the float model, same evaluator)."""
        return compute_reward(metrics, reference, self.budget, self.config.reward)

    def score(self, policy: QuantPolicy) -> Scored:
        """Evaluate (cached) and compute the reward."""
        return self.score_many([policy])[0]

    def score_many(self, policies: Sequence[QuantPolicy]) -> list[Scored]:
        """Evaluate a batch (cached; concurrently on a worker pool) and compute each reward, in order.

        With the ``multi`` evaluator the screen decides which policies get the full evaluation
        (:mod:`haq.problem.fidelity`); otherwise every policy gets ``evaluation.kind``.
        """
        if self.screen is not None:
            return self.screen.score_many(policies)
        kind = self.config.evaluation.kind
        cached = seen_before(self.evaluator, policies)
        metrics = self.evaluator.evaluate_many(policies)
        return [Scored(m, self.reward(m, self.evaluator.reference), kind, None, c) for m, c in zip(metrics, cached)]

    def remember(self, policy: QuantPolicy, scored: Scored) -> None:
        """Re-load a logged result (a resumed run re-reads its episodes)."""
        if self.screen is not None:
            self.screen.remember(policy, scored)
        else:
            self.evaluator.remember(policy, scored.metrics)


def build_problem(
    cfg: EnvConfig,
    *,
    table: DeviceTable,
    latency_source: CostSource | None = None,
    workload: Workload | None = None,
    cache_dir: Path | None = None,
    log: Log | None = None,
    evaluator_factory: EvaluatorFactory | None = None,
    strict: bool = False,
    pool: WorkerPool | None = None,
    sensitivity_store: SensitivityStore | None = None,
) -> SearchProblem:
    """Resolve the budget on ``table`` and build the (cached) evaluator for ``cfg``.

    ``table`` prices the budget and every metric; ``latency_source`` replaces it for the
    episode-end latency (required when ``cfg.evaluation.hardware_feedback`` is on). ``workload``
    reuses a loaded workload (one built from ``cfg.workload``, e.g. the one a measuring
    ``latency_source`` times); without it the float model is loaded (or trained, cached in
    ``cache_dir``) on ``cfg.torch_device``. ``evaluator_factory`` builds the evaluator of each
    kind the problem needs (``cheap`` / ``full``) elsewhere, e.g. on a worker pool
    (:mod:`haq.parallel`); by default they are built here, in-process. A table that prices the
    model's cheapest policy at zero or less is warned about, or refused when ``strict``.
    ``sensitivity_store`` keeps the sensitivity estimates of this problem between runs.
    """
    if cfg.evaluation.hardware_feedback and latency_source is None:
        raise ConfigError(
            "hardware_feedback measures every policy, but no measuring latency source was given; "
            "build the problem with haq.jobs.problems.make_problem"
        )
    if workload is None:
        workload = load_workload(cfg.workload, parse_torch_device(cfg.torch_device), cache_dir=cache_dir, log=log)
    elif workload.config != cfg.workload:
        raise UsageError(f"the given workload is {workload.config.model}, loaded from another workload config than the problem's")
    budget_model = build_budget_model(
        workload.layers,
        table,
        cfg.budget.metric,
        cfg.budget.ratio,
        cfg.budget.absolute,
        cfg.min_bits,
        cfg.max_bits,
        cfg.pin_first_last,
    )
    if cfg.budget.metric != "size" and budget_model.budget.cheapest <= 0:
        problem = (
            f"table '{table.name}' prices {cfg.workload.model}'s cheapest policy at {budget_model.budget.cheapest:.4g} "
            f"({cfg.budget.metric}), below anything a device runs in: its graph-aware terms were fitted on other "
            "configurations and the search's cost terms cannot be trusted"
        )
        fix = f"refit it with this model measured (haq tables fit --model {cfg.workload.model} --device TABLE)"
        if strict:
            raise TableError(f"{problem}; refused under --strict: {fix}")
        if log:
            log(f"warning: {problem}; {fix} (--strict refuses such tables)")
    loaded = workload

    def in_process(kind: str) -> Evaluator:
        return build_evaluator(loaded, table, dataclasses.replace(cfg.evaluation, kind=kind), latency_source)

    make = evaluator_factory or in_process
    sensitivity = None
    if cfg.observation == "v1" or cfg.has_action_prior:
        sensitivity = reward_sensitivity(cfg, workload, log=log, pool=pool, store=sensitivity_store)
    prior = sensitivity_prior(budget_model, sensitivity) if cfg.has_action_prior and sensitivity else None
    if cfg.evaluation.kind != MULTI:
        evaluator = CachedEvaluator(make(cfg.evaluation.kind))
        return SearchProblem(
            cfg,
            workload,
            table,
            budget_model,
            evaluator,
            pool=pool,
            sensitivity=sensitivity,
            prior=prior,
            sensitivity_store=sensitivity_store,
        )
    cheap, full = CachedEvaluator(make(cfg.evaluation.screen_kind)), CachedEvaluator(make(FULL))
    problem = SearchProblem(
        cfg,
        workload,
        table,
        budget_model,
        full,
        pool=pool,
        sensitivity=sensitivity,
        prior=prior,
        sensitivity_store=sensitivity_store,
    )
    ev = cfg.evaluation
    problem.screen = FidelityScreen(
        cheap,
        full,
        problem.reward,
        ev.screen_calibration,
        ev.screen_z,
        ev.screen_min_fraction,
        ev.screen_kind,
        ev.screen_patience,
    )
    return problem


def evaluator_kinds(cfg: EnvConfig) -> tuple[str, ...]:
    """The single-fidelity evaluators a problem of ``cfg`` scores with (screen and judge for ``multi``)."""
    return (cfg.evaluation.screen_kind, FULL) if cfg.evaluation.kind == MULTI else (cfg.evaluation.kind,)


__all__ = ["MULTI", "EvaluatorFactory", "HeldOutFactory", "Scored", "SearchProblem", "build_problem", "evaluator_kinds"]
