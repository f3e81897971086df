"""The run directory: everything a search, a baseline or a transfer writes, in plain JSON.

Layout::

    RUN_DIR/config.json        {"format": "haq.search_run", "version": 1, "kind": "search" |
                                "baseline" | "transfer", "config": the proposer's settings
                                (haq.core.config.to_dict), "budget": Budget.to_dict(),
                                "reference": ReferenceMetrics.to_dict(), "layers": [names],
                                "export_weights": "uint8" | "int8" where a measured table priced it}
    RUN_DIR/episodes.jsonl     one EpisodeRecord per line, appended and flushed as each
                               episode finishes; ``episode`` counts from 0 without gaps
    RUN_DIR/best_policy.json   the best policy so far (haq.policy file; meta holds episode,
                               reward, metrics and the run's export_weights), replaced atomically
    RUN_DIR/checkpoint/ep-NNNNNN/  the newest complete checkpoint after NNNNNN episodes:
                               state.json (episodes done, the last record, the proposer's state),
                               the proposer's payload (an agent: haq.search.agents) and
                               manifest.json (every file's SHA-256); written by haq.runs.checkpoint

Every whole-file write goes through a temp file and a rename; ``episodes.jsonl`` is append-only
and a torn last line (a kill mid-write) is dropped on reading. ``best_policy.json`` is derived
from the log (:meth:`RunDir.sync_best`), so a kill between the two never leaves it wrong for
long. A run directory is data: nothing in it is ever unpickled or imported. A directory that
cannot be read as a run is a :class:`RunDirError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from haq.core import jsonio
from haq.core.errors import RunDirError
from haq.core.fileio import append_durably, atomic_write_text
from haq.core.types import BitPair
from haq.evaluation.metrics import PolicyMetrics
from haq.quant import QuantPolicy
from haq.tables.schema import WEIGHT_CONTAINERS

RUN_FORMAT = "haq.search_run"
RUN_VERSION = 1
CONFIG_FILE = "config.json"
EPISODES_FILE = "episodes.jsonl"
BEST_FILE = "best_policy.json"
EXPORT_WEIGHTS = "export_weights"
"""The key under which config.json records the container of 8-bit weights the run's costs were
timed with (a measured table's; none for an analytical table, which no container changes), and
under which the policy files the run writes carry it, so ``haq export`` stores a model the way
its cost was measured."""


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode (or one baseline evaluation): the policy, its metrics and reward.

    ``policy`` maps layer name → (w_bits, a_bits) in layer order; ``extra`` carries free-form
    annotations (e.g. a baseline's method name).
    """

    episode: int
    policy: Mapping[str, BitPair]
    metrics: PolicyMetrics
    reward: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSONL line (without the newline)."""
        return json.dumps(
            {"episode": self.episode, "policy": policy_json(self.policy), **self.metrics.to_dict(),
             "reward": self.reward, **({"extra": dict(self.extra)} if self.extra else {})},
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, line: str, source: str) -> "EpisodeRecord":
        """Parse one line; a malformed line is a :class:`RunDirError` naming the file."""
        try:
            d = jsonio.loads(line, source, error=RunDirError)
            policy = policy_from_json(d["policy"])
            return cls(int(d["episode"]), policy, PolicyMetrics.from_dict(d), float(d["reward"]), d.get("extra", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RunDirError(f"{source}: malformed episode line ({type(exc).__name__}: {exc})") from exc

    def pairs(self, layer_names: Sequence[str]) -> tuple[BitPair, ...] | None:
        """The policy as one (w, a) pair per layer in ``layer_names``' order; ``None`` when it
        covers other layers (a run of another model)."""
        if set(self.policy) != set(layer_names):
            return None
        return tuple((int(self.policy[n][0]), int(self.policy[n][1])) for n in layer_names)

    def quant_policy(self) -> QuantPolicy:
        """The episode's policy as a :class:`QuantPolicy` (meta: episode, reward, metrics)."""
        meta = {"episode": self.episode, "reward": self.reward, "metrics": self.metrics.to_dict(), **dict(self.extra)}
        return QuantPolicy.from_pairs(self.policy.items(), meta)


def policy_json(policy: Mapping[str, BitPair]) -> dict[str, list[int]]:
    """A policy as a run's log writes it: layer name → ``[w, a]``."""
    return {n: [int(w), int(a)] for n, (w, a) in policy.items()}


def policy_from_json(raw: Mapping[str, Any]) -> dict[str, BitPair]:
    """A policy a run's log wrote (:func:`policy_json`); TypeError, ValueError or IndexError when
    ``raw`` holds something else."""
    return {str(n): (int(p[0]), int(p[1])) for n, p in raw.items()}


class RunDir:
    """Reads and writes one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.episodes_path = self.path / EPISODES_FILE
        self.best_path = self.path / BEST_FILE
        self.checkpoint_dir = self.path / "checkpoint"
        self._weights: tuple[str | None] | None = None  # config.json's export_weights, once read

    def exists(self) -> bool:
        """Whether a run was started here (its config is written first)."""
        return self.config_path.is_file()

    def write_config(self, config: Mapping[str, Any], kind: str = "search", **derived: Any) -> None:
        """Record the settings (``config``) and derived facts (budget, reference, layers)."""
        doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "kind": kind, "config": dict(config), **derived}
        self._weights = None
        atomic_write_text(self.config_path, json.dumps(doc, indent=2, allow_nan=False) + "\n")

    def read_config(self) -> dict[str, Any]:
        """The whole config.json document (validated header)."""
        doc = jsonio.read_json(self.config_path, "run config", error=RunDirError)
        if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT or doc.get("version") != RUN_VERSION:
            raise RunDirError(f"{self.config_path}: not a haq run config (format '{RUN_FORMAT}' version {RUN_VERSION})")
        return doc

    def export_weights(self) -> str | None:
        """The container config.json records (:data:`EXPORT_WEIGHTS`); None for a run priced by
        an analytical table, one written before the record existed, or one not started yet. Read
        once (config.json is not rewritten during a run), not again for every new best."""
        if self._weights is None:
            if not self.exists():
                return None
            self._weights = (recorded_weights(self.read_config(), str(self.config_path), RunDirError),)
        return self._weights[0]

    def read_episodes(self) -> list[EpisodeRecord]:
        """All complete episode lines (a torn last line from a kill mid-write is ignored)."""
        if not self.episodes_path.is_file():
            return []
        lines = jsonio.read_text(self.episodes_path, "episode log", max_bytes=jsonio.MAX_LOG_BYTES, error=RunDirError).split("\n")
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            if i == len(lines) - 1:  # no trailing newline: the write was interrupted
                break
            records.append(EpisodeRecord.from_json(line, f"{self.episodes_path} line {i + 1}"))
        return records

    def rewrite_episodes(self, records: list[EpisodeRecord]) -> None:
        """Replace the log atomically (used to drop a torn line or repair after a crash)."""
        atomic_write_text(self.episodes_path, "".join(r.to_json() + "\n" for r in records))

    def append_episode(self, record: EpisodeRecord) -> None:
        """Append one line and force it to disk before returning (a failed write leaves no half line)."""
        append_durably(self.episodes_path, record.to_json() + "\n")

    def write_best(self, record: EpisodeRecord) -> None:
        """Replace best_policy.json atomically."""
        atomic_write_text(self.best_path, _best_text(record, self.export_weights()))

    def read_best(self) -> EpisodeRecord | None:
        """The best episode in the log, or None."""
        return best_of(self.read_episodes())

    def sync_best(self, records: Sequence[EpisodeRecord]) -> EpisodeRecord | None:
        """Make best_policy.json hold the best of ``records`` (the log), whatever a kill left there.

        Rewritten only when its bytes differ; left alone while the log is empty (it is written
        after the log line, so it cannot be ahead of the log). Every proposer calls this through
        :class:`~haq.runs.checkpoint.RunStore` on resume and at the end of a run.
        """
        best = best_of(records)
        if best is None:
            return None
        text = _best_text(best, self.export_weights())
        try:
            current = jsonio.read_text(self.best_path, "best policy", error=RunDirError)
        except RunDirError:  # missing, unreadable or not a file: replaced below
            current = None
        if current != text:
            atomic_write_text(self.best_path, text)
        return best


def best_of(records: Sequence[EpisodeRecord]) -> EpisodeRecord | None:
    """The best episode: highest reward, earliest on ties (what best_policy.json holds); None if none."""
    return max(records, key=lambda r: (r.reward, -r.episode)) if records else None



def recorded_weights(doc: Mapping[str, Any], source: str, error: type[Exception]) -> str | None:
    """The :data:`EXPORT_WEIGHTS` container ``doc`` (config.json, or a policy file's meta)
    records, None when it records none; ``error`` names any other value."""
    value = doc.get(EXPORT_WEIGHTS)
    if value is not None and value not in WEIGHT_CONTAINERS:
        raise error(f"{source}: '{EXPORT_WEIGHTS}' must be one of {', '.join(WEIGHT_CONTAINERS)}, got {value!r}")
    return value


def with_weights(policy: QuantPolicy, weights: str | None) -> QuantPolicy:
    """``policy`` with the run's :data:`EXPORT_WEIGHTS` container in its meta (unchanged for None)."""
    return policy if weights is None else QuantPolicy(policy.layers, {**policy.meta, EXPORT_WEIGHTS: weights})


def _best_text(record: EpisodeRecord, weights: str | None) -> str:
    """best_policy.json's exact bytes for ``record`` in a run that records ``weights``."""
    return json.dumps(with_weights(record.quant_policy(), weights).to_dict(), indent=2, allow_nan=False) + "\n"
