"""Search configuration: one frozen dataclass per concern, validated on construction.

Every field has a default, so ``SearchConfig()`` is the embedded default (digits CNN on the
Bit Fusion table at half the uniform 8-bit latency). Configs round-trip through JSON
(``to_dict`` / ``from_dict``) so a run directory records exactly what produced it and a
``--resume`` can refuse a directory written by a different configuration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, TypeVar

from haq.errors import ConfigError
from haq.quant import FLOAT_BITS, MAX_BITS, MIN_BITS
from haq.workload import WorkloadConfig

METRICS = ("latency", "energy", "size")
EVALUATORS = ("cheap", "full")
AGENTS = ("ddpg", "td3", "sac", "ppo")
DEFAULT_TABLE = "bitfusion"

T = TypeVar("T")


def _finite(name: str, value: float, low: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _positive(name: str, value: float) -> None:
    _finite(name, value)
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _count(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} '{value}'; choose one of {', '.join(valid)}")


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
        _choice("budget metric", self.metric, METRICS)
        _positive("budget ratio", self.ratio)
        if self.absolute is not None:
            _positive("absolute budget", self.absolute)


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the episode reward (see :func:`haq.search.reward.compute_reward`).

    acc_weight: per percentage point of clean accuracy against the float model (HAQ: 0.1).
    robust_weight: per percentage point of worst-case robust accuracy against the float model.
    cost_weight: per unit of cost / budget (0 treats the budget purely as a constraint).
    """

    acc_weight: float = 0.1
    robust_weight: float = 0.05
    cost_weight: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            _finite(f.name, getattr(self, f.name), 0.0)


@dataclass(frozen=True)
class EvalConfig:
    """How a policy is scored at the end of an episode.

    kind: ``cheap`` (calibrated post-training quantization, clean accuracy only) or ``full``
        (calibrate, DQ fine-tune, clean + worst-case robust accuracy).
    val_samples: size of the fixed held-out subset (first samples of the val split).
    calib_batches: calibration batches of ``batch_size`` training images.
    batch_size: calibration / fine-tuning batch size.
    finetune_epochs: DQ fine-tuning epochs (full evaluator).
    finetune_batches: cap on fine-tuning batches per epoch (keeps an episode short).
    finetune_lr: DQ fine-tuning learning rate.
    dq_beta: weight of the orthogonality penalty during fine-tuning.
    attack_eps: L-inf radius of the robustness attacks (full evaluator).
    attack_steps: PGD iterations.
    attacks: attack names for the worst case (``haq.robust.ATTACKS``); transfer attacks are
        crafted on the float model, which gradient masking in low-bit layers cannot fool.
    robust_samples: how many of the val subset are attacked (attacks are the expensive part).
    hardware_feedback: cost the latency by measuring the policy instead of reading the table.
    """

    kind: str = "cheap"
    val_samples: int = 300
    calib_batches: int = 2
    batch_size: int = 128
    finetune_epochs: int = 1
    finetune_batches: int = 8
    finetune_lr: float = 1e-3
    dq_beta: float = 3e-3
    attack_eps: float = 0.1
    attack_steps: int = 10
    attacks: tuple[str, ...] = ("fgsm", "pgd", "transfer_pgd")
    robust_samples: int = 100
    hardware_feedback: bool = False

    def __post_init__(self) -> None:
        _choice("evaluator", self.kind, EVALUATORS)
        for name in ("val_samples", "calib_batches", "batch_size", "finetune_batches", "attack_steps", "robust_samples"):
            _count(name, getattr(self, name))
        _count("finetune_epochs", self.finetune_epochs, 0)
        _positive("finetune_lr", self.finetune_lr)
        _finite("dq_beta", self.dq_beta, 0.0)
        _positive("attack_eps", self.attack_eps)
        object.__setattr__(self, "attacks", tuple(self.attacks))
        if not self.attacks or not all(isinstance(a, str) for a in self.attacks):
            raise ConfigError(f"attacks must be a non-empty list of attack names, got {self.attacks!r}")


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

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class AgentConfig:
    """The reinforcement-learning agent (stable-baselines3) and HAQ's DDPG recipe.

    algo: ``ddpg`` | ``td3`` | ``sac`` | ``ppo``; SAC is the default because it was the one
        that reliably beat random search in a short budget (tests/test_learns.py).
    hidden: hidden layer sizes of actor and critic (small: the state has ~20 features).
    learning_rate: Adam learning rate of actor and critic (stable-baselines3 uses one rate).
    batch_size: replay minibatch (off-policy) or PPO minibatch cap.
    tau: target-network soft-update rate.
    warmup_episodes: episodes of uniformly random actions before learning (off-policy).
    noise_sigma: initial std of the truncated-normal exploration noise (DDPG / TD3).
    noise_decay: per-episode decay factor of that std after warm-up.
    reward_baseline: subtract a moving average of past episode rewards (HAQ's variance trick);
        ``None`` turns it on for DDPG (HAQ's recipe) and off for the others (it made SAC worse).
    baseline_momentum: weight of the old average in that moving average.
    gradient_steps: gradient updates per finished episode (off-policy); ``-1`` = one per step.
    ppo_epochs: PPO optimization epochs per rollout (one rollout = one episode).
    """

    algo: str = "sac"
    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    batch_size: int = 64
    tau: float = 0.01
    warmup_episodes: int = 10
    noise_sigma: float = 0.5
    noise_decay: float = 0.99
    reward_baseline: bool | None = None
    baseline_momentum: float = 0.9
    gradient_steps: int = 32
    ppo_epochs: int = 10

    @property
    def uses_baseline(self) -> bool:
        """Whether the reward baseline wrapper is applied."""
        return self.algo == "ddpg" if self.reward_baseline is None else self.reward_baseline

    def __post_init__(self) -> None:
        _choice("agent", self.algo, AGENTS)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be a non-empty list of positive layer sizes, got {list(self.hidden)}")
        _positive("learning_rate", self.learning_rate)
        _count("batch_size", self.batch_size)
        _count("warmup_episodes", self.warmup_episodes, 0)
        _count("ppo_epochs", self.ppo_epochs)
        for name in ("tau", "noise_decay"):
            _finite(name, getattr(self, name))
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        _finite("baseline_momentum", self.baseline_momentum)
        if not 0 <= self.baseline_momentum < 1:
            raise ConfigError(f"baseline_momentum must be in [0, 1), got {self.baseline_momentum}")
        _finite("noise_sigma", self.noise_sigma, 0.0)
        if self.gradient_steps == 0 or self.gradient_steps < -1:
            raise ConfigError(f"gradient_steps must be >= 1 or -1 (one per collected step), got {self.gradient_steps}")


@dataclass(frozen=True)
class SearchConfig:
    """A whole search run: the environment, the agent, how many episodes, and the seed."""

    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    episodes: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        _count("episodes", self.episodes)
        _count("seed", self.seed, 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchConfig":
        """Inverse of :meth:`to_dict`; unknown or missing keys are a :class:`ConfigError`."""
        try:
            env = dict(data["env"])
            return cls(
                env=EnvConfig(
                    **{
                        **env,
                        "workload": _build(WorkloadConfig, env["workload"]),
                        "budget": _build(BudgetConfig, env["budget"]),
                        "reward": _build(RewardConfig, env["reward"]),
                        "evaluation": _build(EvalConfig, env["evaluation"]),
                    }
                ),
                agent=_build(AgentConfig, data["agent"]),
                episodes=data["episodes"],
                seed=data["seed"],
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"search config is malformed ({type(exc).__name__}: {exc}); write it with SearchConfig.to_dict") from exc


def _build(cls: type[T], data: Any) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    return cls(**data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
