"""The bit-width search: configs, budget, evaluators, reward, the run directory and the run loop.

``run_search`` (and the stable-baselines3 agents it needs) is imported on first use, so the
baselines and ``haq evaluate`` can use the evaluator without loading the RL stack.
"""

from __future__ import annotations

from typing import Any

from haq.search.config import AgentConfig, BudgetConfig, EnvConfig, EvalConfig, RewardConfig, SearchConfig
from haq.search.costs import Budget, BudgetModel, LayerChoices, build_budget_model, load_table
from haq.search.evaluator import (
    CachedEvaluator,
    CheapEvaluator,
    Evaluator,
    FullEvaluator,
    PolicyMetrics,
    ReferenceMetrics,
    make_evaluator,
)
from haq.search.problem import Scored, SearchProblem, build_problem
from haq.search.reward import compute_reward
from haq.search.rundir import EpisodeRecord, RunDir

_LAZY = {"run_search": "haq.search.run", "SearchResult": "haq.search.run", "SearchProgress": "haq.search.progress"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'haq.search' has no attribute '{name}'")


__all__ = [
    "AgentConfig",
    "Budget",
    "BudgetConfig",
    "BudgetModel",
    "CachedEvaluator",
    "CheapEvaluator",
    "EnvConfig",
    "EpisodeRecord",
    "EvalConfig",
    "Evaluator",
    "FullEvaluator",
    "LayerChoices",
    "PolicyMetrics",
    "ReferenceMetrics",
    "RewardConfig",
    "RunDir",
    "Scored",
    "SearchConfig",
    "SearchProblem",
    "SearchProgress",
    "SearchResult",
    "build_budget_model",
    "build_problem",
    "compute_reward",
    "load_table",
    "make_evaluator",
    "run_search",
]
