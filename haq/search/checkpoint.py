"""The RL proposers' checkpoint: the run-directory core (:class:`~haq.runs.checkpoint.RunStore`)
with a stable-baselines3 agent as its payload, shared by the search and the transfer.

A checkpoint holds the agent as data (:func:`~haq.search.agents.save_agent`: its state, weights
and replay buffer, never a pickle) and ``agent.json``, the description a later transfer needs to
reuse the agent (:func:`agent_description`). Its ``state.json`` says whether the episode it
completes still owes the agent its gradient update (``update_pending``): a search checkpoints
between collecting an episode and learning from it, so a resume makes that update first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from envs.mixed_precision import OBSERVATION_FEATURES
from haq.core import config as serial
from haq.core.errors import InternalError, RunDirError
from haq.problem.problem import SearchProblem
from haq.runs.checkpoint import RunStore
from haq.search.agents import AGENT_FILES, restore_agent, save_agent
from haq.search.config import SearchConfig
from haq.search.snapshot import TrainingState

BATCH = "batch"
"""Key of a checkpoint's state: episodes the agent collects at once (its environments; 1 if absent)."""
PHASE = "phase"
"""Key of a checkpoint's state: which of a portfolio's agents it holds (0 if absent: the first or only one)."""
UPDATE_PENDING = "update_pending"
"""Key of a checkpoint's state: whether the agent still owes the checkpointed episode its update."""


def checkpoint_phase(path: Path, state: Mapping[str, Any]) -> int:
    """Which of a portfolio's agents the checkpoint at ``path`` holds (0, the first or only one, if
    its ``state`` does not say)."""
    phase = state.get(PHASE, 0)
    if isinstance(phase, bool) or not isinstance(phase, int) or phase < 0:
        raise RunDirError(f"{path}: '{PHASE}' must be a non-negative integer, got {phase!r}")
    return phase


class AgentStore(RunStore):
    """A run directory whose checkpoints hold an agent: set ``agent`` before each commit."""

    kind = "search"

    def __init__(self, path: str | Path, settings: Any = None, description: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, settings)
        self.description = dict(description or {})
        self.agent: BaseAlgorithm | None = None

    def load_agent(self, env: gym.Env, capacity: int | None = None) -> tuple[BaseAlgorithm, TrainingState]:
        """The latest checkpoint's agent, attached to ``env``, and the states that continue its
        training; ``capacity`` grows its replay buffer (a resume that runs more episodes)."""
        if self.checkpoint is None:
            raise InternalError(f"no agent checkpoint restored from {self.path} to load")
        model, _, training = restore_agent(self.checkpoint.path, env, capacity=capacity)
        return model, training

    def _write_payload(self, directory: Path) -> None:
        if self.agent is None:
            raise InternalError(f"an agent checkpoint for {self.path} was saved without an agent")
        save_agent(self.agent, directory, self.description)

    def _is_complete(self, directory: Path) -> bool:
        return all((directory / name).is_file() for name in AGENT_FILES)


def agent_description(problem: SearchProblem, config: SearchConfig) -> dict[str, Any]:
    """What a saved agent needs to be reused on another device or model (``agent.json``)."""
    env = problem.config
    settings = serial.to_dict(config)
    return {
        "observation": {
            "version": env.observation,
            "features": list(OBSERVATION_FEATURES[env.observation]),
            "scaling": "fixed constants, clipped to [0, 1]",
        },
        "min_bits": env.min_bits,
        "max_bits": env.max_bits,
        "pin_first_last": env.pin_first_last,
        "reward": settings["env"]["reward"],
        "budget": settings["env"]["budget"],
        "source_table": problem.table.name,
        "source_model": env.workload.model,
        "agent": settings["agent"],
    }
