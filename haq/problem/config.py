"""The problem's settings: what to quantize, on which device table, under what budget, rewarded how.

Every field has a default, so ``EnvConfig()`` is the embedded default (digits CNN on the Bit
Fusion table at half the uniform 8-bit latency).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from haq.core.errors import ConfigError
from haq.core.validate import choice, finite, positive
from haq.evaluation.config import EvalConfig
from haq.quant import FLOAT_BITS, MAX_BITS, MIN_BITS
from haq.workload import WorkloadConfig

METRICS = ("latency", "energy", "size")
OBSERVATIONS = ("v0", "v1")
"""Observation layouts of the environment: ``v1`` adds per-layer sensitivity features to ``v0``."""
ACTION_PRIORS = ("auto", "uniform", "sensitivity")
"""Where the environment centres actions: ``uniform`` bins, the sensitivity ILP's assignment, or
``auto`` (the ILP's assignment when the reward has no robustness term, see :attr:`EnvConfig.prior`)."""
REPAIRS = ("shift", "ceiling")
"""Whole-episode budget repairs (:func:`haq.problem.budget.lower_to_fit`)."""
PROJECTIONS = ("stepwise", *REPAIRS)
"""How an episode is kept within budget: each layer as it is decided, or the whole request once it
ends by one of :data:`REPAIRS`."""
DEFAULT_TABLE = "bitfusion"


@dataclass(frozen=True)
class BudgetConfig:
    """The resource constraint every episode is projected into.

    metric: ``latency`` (table, ms), ``energy`` (table, mJ) or ``size`` (weight bits).
    ratio: budget as a fraction of the model's cost at uniform ``max_bits`` (HAQ's convention).
    absolute: budget in the metric's own units; when set it replaces ``ratio``.
    """

    metric: str = "latency"
    ratio: float = 0.5
    absolute: float | None = None

    def __post_init__(self) -> None:
        choice("budget metric", self.metric, METRICS)
        positive("budget ratio", self.ratio)
        if self.absolute is not None:
            positive("absolute budget", self.absolute)


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the episode reward (see :func:`haq.problem.reward.compute_reward`).

    acc_weight: per percentage point of clean accuracy against the float model (HAQ: 0.1).
    robust_weight: per percentage point of worst-case robust accuracy against the float model.
    cost_weight: per unit of cost / budget (0 treats the budget purely as a constraint).
    """

    acc_weight: float = 0.1
    robust_weight: float = 0.05
    cost_weight: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            finite(f.name, getattr(self, f.name), 0.0)


@dataclass(frozen=True)
class EnvConfig:
    """Everything the environment needs: what to quantize, on which device, under what budget.

    workload: model, dataset and training seed.
    table: a shipped device table's name (``bitfusion``, ...) or a table file path.
    budget: the constraint.
    min_bits / max_bits: the bit range actions map into (intersected with the device's pairs).
    pin_first_last: bit width forced on the first and last layer (``None`` lets the agent pick).
    reward: reward weights.
    evaluation: how a finished episode's policy is scored.
    torch_device: where evaluation runs (``cpu``, ``cuda:0``).
    observation: the observation layout (``envs.mixed_precision``): ``v0`` (layer, hardware and
        budget features) or ``v1`` (``v0`` plus each layer's estimated quantization sensitivity,
        the information the ILP baseline searches with, estimated once before the search).
    action_prior: how an action maps to bit widths (``envs.mixed_precision``): ``uniform`` splits
        [-1, 1] into equal bins per width; ``sensitivity`` centres 0 on the assignment with the
        least estimated sensitivity error within the budget (``haq.problem.allocation``) and
        stretches each side to the lowest / highest width, so every pair stays reachable and
        the agent starts from an informed allocation and learns corrections from real rewards;
        ``auto`` (the default) is ``sensitivity`` when the reward has no robustness term and
        ``uniform`` when it has one: the sensitivity estimates the clean loss only, and low-bit
        activations that raise worst-case robust accuracy are exactly what it counts against.
    projection: how the budget is kept (``envs.mixed_precision``): ``stepwise`` (the default)
        lowers each layer's request as it is decided so that the rest can still fit; ``shift``
        and ``ceiling`` apply every request and, once the episode ends, lower the whole request
        until it fits (:func:`haq.problem.budget.lower_to_fit`): every layer a step per round
        (HAQ's repair), or only the widest layers.
    """

    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    table: str = DEFAULT_TABLE
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    min_bits: int = 2
    max_bits: int = MAX_BITS
    pin_first_last: int | None = None
    reward: RewardConfig = field(default_factory=RewardConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    torch_device: str = "cpu"
    observation: str = "v0"
    action_prior: str = "auto"
    projection: str = "stepwise"

    @property
    def rewards_robustness(self) -> bool:
        """Whether the reward has a robustness term (an evaluator that attacks, a weight on it)."""
        return self.evaluation.kind != "cheap" and self.reward.robust_weight > 0

    @property
    def prior(self) -> str:
        """The action prior in effect: ``action_prior`` with ``auto`` resolved."""
        if self.action_prior != "auto":
            return self.action_prior
        return "uniform" if self.rewards_robustness else "sensitivity"

    @property
    def has_action_prior(self) -> bool:
        """Whether a problem built from this config centres actions on the sensitivity ILP's
        allocation (its ``SearchProblem.prior``): what the agent's automatic settings are resolved
        by (:meth:`haq.search.config.AgentConfig.for_problem`) where only the config is at hand."""
        return self.prior == "sensitivity"

    def __post_init__(self) -> None:
        choice("observation", self.observation, OBSERVATIONS)
        choice("action_prior", self.action_prior, ACTION_PRIORS)
        choice("projection", self.projection, PROJECTIONS)
        top_ok = self.max_bits == FLOAT_BITS or self.max_bits <= MAX_BITS
        if not (MIN_BITS <= self.min_bits <= MAX_BITS and self.min_bits <= self.max_bits and top_ok):
            raise ConfigError(
                f"bit range {self.min_bits}..{self.max_bits} is invalid; need {MIN_BITS} <= min_bits <= max_bits <= {MAX_BITS}, "
                f"or max_bits = {FLOAT_BITS} to let layers stay float (CPU tables)"
            )
        if self.pin_first_last is not None and not (self.min_bits <= self.pin_first_last <= self.max_bits):
            raise ConfigError(f"pin_first_last={self.pin_first_last} is outside the bit range {self.min_bits}..{self.max_bits}")
        if not self.table:
            raise ConfigError("table must name a shipped device table or a table file")
