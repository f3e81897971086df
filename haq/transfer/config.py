"""Settings of a transfer run: which trained search to reuse, on which device, and how to fine-tune.

The target environment is derived from the source run's own configuration (bit range, reward
weights, evaluator, budget ratio) with only the device table, and optionally the model and the
budget, replaced; so a transfer measures the agent, not a change of rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from haq.core.errors import ConfigError
from haq.evaluation.config import EVALUATORS


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
    """

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

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("transfer needs a source run directory (--from RUN_DIR)")
        if not self.table:
            raise ConfigError("transfer needs the new device: a shipped table name or a table file (--device)")
        for name in ("episodes", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("budget_ratio", "budget_absolute"):
            value = getattr(self, name)
            if value is not None and not _finite_positive(value):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if self.evaluator is not None and self.evaluator not in EVALUATORS:
            raise ConfigError(f"unknown evaluator '{self.evaluator}'; choose one of {', '.join(EVALUATORS)}")
        if not (_finite_positive(self.noise_sigma) or self.noise_sigma == 0):
            raise ConfigError(f"noise_sigma must be a finite number >= 0, got {self.noise_sigma!r}")
        if not _finite_positive(self.noise_decay) or self.noise_decay > 1:
            raise ConfigError(f"noise_decay must be in (0, 1], got {self.noise_decay!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransferConfig":
        """Inverse of :meth:`to_dict`; unknown or missing keys are a :class:`ConfigError`."""
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"transfer config is malformed ({exc}); write it with TransferConfig.to_dict") from exc


def _finite_positive(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
