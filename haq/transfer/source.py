"""The source of a transfer: a finished (or interrupted) search run and its latest saved agent.

A search checkpoint holds the agent (as data, :mod:`haq.search.snapshot`) and ``agent.json`` describing what the agent was trained
with (observation features, bit range, reward weights, source table and model; see
:func:`haq.search.checkpoint.agent_description`). The checkpoint is found by the same core that
wrote it (:meth:`AgentStore.latest <haq.runs.checkpoint.RunStore.latest>`); everything here only
reads and validates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.mixed_precision import OBS_FEATURES, OBSERVATION_FEATURES
from haq.core import config as serial
from haq.core.errors import ConfigError, RunDirError
from haq.search.agents import read_description
from haq.search.checkpoint import AgentStore, checkpoint_phase
from haq.search.config import SearchConfig

AGENT_RUN_KINDS = ("search", "transfer")


@dataclass(frozen=True)
class SourceRun:
    """A run directory holding a trained agent.

    config: the settings the agent was trained under (of a portfolio search, those of the member
        whose agent the checkpoint holds).
    checkpoint: the newest complete checkpoint directory.
    meta: the agent description (``agent.json``).
    episodes_done: episodes the agent had finished when it was checkpointed.
    """

    path: Path
    kind: str
    config: SearchConfig
    checkpoint: Path
    meta: dict[str, Any]
    episodes_done: int

    @property
    def table(self) -> str:
        """The device the agent last trained on."""
        return str(self.meta.get("source_table", self.config.env.table))

    @property
    def model(self) -> str:
        """The model the agent last trained on."""
        return str(self.meta.get("source_model", self.config.env.workload.model))

    def describe(self) -> dict[str, Any]:
        """What a transfer run records about its source."""
        return {
            "run_dir": str(self.path.resolve()),
            "kind": self.kind,
            "checkpoint": self.checkpoint.name,
            "episodes_done": self.episodes_done,
            "table": self.table,
            "model": self.model,
            "algo": self.meta.get("algo"),
            "decision": self.config.agent.decision,
        }


def load_source(path: str | Path) -> SourceRun:
    """Open a search run for transfer; a one-line error says what is missing."""
    store = AgentStore(path)
    rd = store.rd
    if not rd.path.is_dir():
        raise RunDirError(f"--from {rd.path}: no such directory; give the run directory of a `haq search`")
    if not rd.exists():
        raise RunDirError(f"--from {rd.path}: not a search run (no config.json); give the run directory of a `haq search`")
    doc = rd.read_config()
    kind = str(doc.get("kind"))
    if kind not in AGENT_RUN_KINDS:
        raise RunDirError(
            f"--from {rd.path}: a '{kind}' run has no trained agent; transfer needs a {' or '.join(AGENT_RUN_KINDS)} run"
        )
    stored = doc.get("config", {})
    if isinstance(stored, dict) and isinstance(stored.get("env"), dict) and "action_prior" not in stored["env"]:
        stored = {**stored, "env": {**stored["env"], "action_prior": "uniform"}}  # written before action priors existed
    try:
        config = serial.from_dict(SearchConfig, stored, "search config", stored=True)
    except ConfigError as exc:
        raise RunDirError(f"--from {rd.path}: its config.json no longer reads as a search config ({exc})") from exc
    checkpoint = store.latest()
    if checkpoint is None:
        raise RunDirError(
            f"--from {rd.path}: no complete agent checkpoint under {rd.checkpoint_dir}; "
            "let the search finish at least one episode"
        )
    meta = read_description(checkpoint.path)
    check_observation_layout(meta, str(checkpoint.path))
    phases = config.agent.phases(config.episodes, config.env.has_action_prior)
    phase = checkpoint_phase(checkpoint.path, checkpoint.state)
    if phase >= len(phases):
        raise RunDirError(f"{checkpoint.path}: holds agent {phase + 1}, but its search runs {len(phases)}; start a new search")
    config = dataclasses.replace(config, agent=phases[phase][0])
    return SourceRun(rd.path, kind, config, checkpoint.path, meta, checkpoint.episodes_done)


def check_observation_layout(meta: dict[str, Any], where: str) -> None:
    """Refuse an agent whose observation features differ from this environment's (:class:`RunDirError`)."""
    obs = meta.get("observation")
    features = obs.get("features") if isinstance(obs, dict) else None
    if features not in [list(layout) for layout in OBSERVATION_FEATURES.values()]:
        n = len(features) if isinstance(features, list) else "unknown"
        raise RunDirError(
            f"{where}: incompatible observation layout ({n} features {_first_mismatch(features)}); "
            f"this haq's environment observes {len(OBS_FEATURES)} features {list(OBS_FEATURES)[:3]}..., "
            "so the agent cannot be reused"
        )


def _first_mismatch(features: Any) -> str:
    if not isinstance(features, list):
        return "recorded"
    for i, (got, want) in enumerate(zip(features, OBS_FEATURES)):
        if got != want:
            return f"; feature {i} is '{got}', expected '{want}'"
    return f"instead of {len(OBS_FEATURES)}"
