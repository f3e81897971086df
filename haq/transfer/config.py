"""Settings of a transfer run: which trained search to reuse, on which device, and how to fine-tune.

The target environment is derived from the source run's own configuration (bit range, reward
weights, evaluator, budget ratio) with only the device table, and optionally the model and the
budget, replaced; so a transfer measures the agent, not a change of rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from haq.core.errors import ConfigError
from haq.core.validate import choice, count, finite, positive, unit_interval
from haq.evaluation.config import EVALUATORS

PREDICTED_START = "predicted"
BEST_REUSED_START = "best_reused"
ZERO_SHOT_STARTS = (PREDICTED_START, BEST_REUSED_START)
"""What a reusing transfer's zero-shot policy is (:attr:`TransferConfig.zero_shot`)."""


@dataclass(frozen=True)
class TransferConfig:
    """One transfer run.

    source: the search (or transfer) run directory whose latest agent checkpoint is reused.
    table: the new device: a shipped table name or a table file.
    model / dataset: replace the source's workload (cross-model transfer); ``None`` keeps it
        (a new model without ``dataset`` uses that model's own dataset).
    episodes: fine-tuning episodes after the zero-shot episode (0: zero-shot only).
    seed: seeds the fine-tuning (exploration noise, minibatches).
    budget_ratio / budget_absolute: replace the source's budget (an absolute budget in another
        device's units means nothing on the new one, so it must be replaced).
    evaluator: replace the source's evaluator kind (``cheap`` | ``full``).
    noise_sigma / noise_decay: fresh exploration noise for fine-tuning (DDPG / TD3): HAQ's
        initial σ, decaying faster than a search's. A transferred actor is often saturated at
        the action bounds, which smaller noise cannot move (σ = 0.2 left several fine-tunings
        repeating the zero-shot policy in bench/transfer.py --quick; 0.5 scored better in 6/6 pairs).
    input_size: square input side on the new model (``None``: the source's for the same model,
        else the new model's own; see :func:`haq.workload.resolve_input`).
    reuse_source: before the zero-shot episode, replay the source run's evaluated policies,
        re-priced on the new device, and learn from them (:mod:`haq.transfer.experience`): the
        same model and evaluator give the same accuracies on any device. ``False`` transfers
        the agent alone (as every objective agent is: its actions decode to other bits on the new device).
    clone_steps: with reuse, the critic learns from the replayed episodes and the actor is fitted
        (at most this many steps) to the best of them, so the zero-shot episode is that policy; 0 lets
        the actor learn from the critic instead (`bench/transfer.py`, comparisons within a quarter
        of scratch's episodes, of 162: fitted 101, critic-led actor 69, agent alone 77).
    zero_shot: with reuse and cloning, what the actor is fitted to: ``predicted`` (the sensitivity
        allocation predicted best on the new device, :mod:`haq.transfer.start`, when it is predicted
        to beat the best reused policy; else that policy) or ``best_reused`` (always that policy).
    """

    VERSION: ClassVar[int] = 1

    source: str
    table: str
    model: str | None = None
    dataset: str | None = None
    episodes: int = 10
    seed: int = 0
    budget_ratio: float | None = None
    budget_absolute: float | None = None
    evaluator: str | None = None
    noise_sigma: float = 0.5
    noise_decay: float = 0.9
    input_size: int | None = None
    reuse_source: bool = True
    clone_steps: int = 2000
    zero_shot: str = PREDICTED_START

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("transfer needs a source run directory (--from RUN_DIR)")
        if not self.table:
            raise ConfigError("transfer needs the new device: a shipped table name or a table file (--device)")
        count("episodes", self.episodes, 0)
        count("seed", self.seed, 0)
        for name in ("budget_ratio", "budget_absolute"):
            value = getattr(self, name)
            if value is not None:
                positive(name, value)
        if self.evaluator is not None:
            choice("evaluator", self.evaluator, EVALUATORS)
        finite("noise_sigma", self.noise_sigma, 0.0)
        unit_interval("noise_decay", self.noise_decay)
        if self.input_size is not None:
            count("input_size", self.input_size)
        count("clone_steps", self.clone_steps, 0)
        choice("zero_shot", self.zero_shot, ZERO_SHOT_STARTS)
