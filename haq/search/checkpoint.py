"""The RL proposers' checkpoint: the run-directory core (:class:`~haq.runs.checkpoint.RunStore`)
with a stable-baselines3 agent as its payload, shared by the search and the transfer.

A checkpoint holds ``agent.zip``, the replay buffer (off-policy agents) and ``agent.json``, the
description a later transfer needs to reuse the agent (:func:`agent_description`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

from envs.mixed_precision import OBS_FEATURES
from haq.core import config as serial
from haq.core.errors import InternalError
from haq.problem.problem import SearchProblem
from haq.runs.checkpoint import RunStore
from haq.search.agents import AGENT_FILE, META_FILE, load_agent, save_agent
from haq.search.config import SearchConfig


class AgentStore(RunStore):
    """A run directory whose checkpoints hold an agent: set ``agent`` before each commit."""

    kind = "search"

    def __init__(self, path: str | Path, settings: Mapping[str, Any] | None = None, description: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, settings)
        self.description = dict(description or {})
        self.agent: BaseAlgorithm | None = None

    def load_agent(self, env: gym.Env, with_buffer: bool = True) -> BaseAlgorithm:
        """The latest checkpoint's agent, attached to ``env``."""
        if self.checkpoint is None:
            raise InternalError(f"no agent checkpoint restored from {self.path} to load")
        return load_agent(self.checkpoint.path, env, with_buffer)[0]

    def _write_payload(self, directory: Path) -> None:
        if self.agent is None:
            raise InternalError(f"an agent checkpoint for {self.path} was saved without an agent")
        save_agent(self.agent, directory, self.description)

    def _is_complete(self, directory: Path) -> bool:
        return (directory / AGENT_FILE).is_file() and (directory / META_FILE).is_file()


def agent_description(problem: SearchProblem, config: SearchConfig) -> dict[str, Any]:
    """What a saved agent needs to be reused on another device or model (``agent.json``)."""
    env = problem.config
    settings = serial.to_dict(config)
    return {
        "observation": {"version": "v0", "features": list(OBS_FEATURES), "scaling": "fixed constants, clipped to [0, 1]"},
        "min_bits": env.min_bits,
        "max_bits": env.max_bits,
        "pin_first_last": env.pin_first_last,
        "reward": settings["env"]["reward"],
        "budget": settings["env"]["budget"],
        "source_table": problem.table.name,
        "source_model": env.workload.model,
        "agent": settings["agent"],
    }
