"""The run directory: everything a search (or a baseline) writes, in plain JSON.

Layout::

    RUN_DIR/config.json        {"format": "haq.search_run", "version": 1, "kind": "search",
                                "config": SearchConfig.to_dict(), "budget": Budget.to_dict(),
                                "reference": ReferenceMetrics.to_dict(), "layers": [names]}
    RUN_DIR/episodes.jsonl     one EpisodeRecord per line, appended and flushed as each
                               episode finishes; ``episode`` counts from 0 without gaps
    RUN_DIR/best_policy.json   the best policy so far (haq.policy file; meta holds episode,
                               reward and metrics), replaced atomically
    RUN_DIR/checkpoint/ep-NNNNNN/  agent.zip, replay_buffer.pkl, agent.json, state.json: the
                               newest complete checkpoint (written by haq.search.run)

Every whole-file write goes through a temp file and a rename; ``episodes.jsonl`` is append-only
and a torn last line (a kill mid-write) is dropped on reading.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.quant import LayerBits, QuantPolicy
from haq.evaluation.evaluators import PolicyMetrics

RUN_FORMAT = "haq.search_run"
RUN_VERSION = 1


@dataclass(frozen=True)
class EpisodeRecord:
    """One finished episode (or one baseline evaluation): the policy, its metrics and reward.

    ``policy`` maps layer name → (w_bits, a_bits) in layer order; ``extra`` carries free-form
    annotations (e.g. a baseline's method name).
    """

    episode: int
    policy: Mapping[str, tuple[int, int]]
    metrics: PolicyMetrics
    reward: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """One JSONL line (without the newline)."""
        return json.dumps(
            {"episode": self.episode, "policy": {n: list(p) for n, p in self.policy.items()}, **self.metrics.to_dict(),
             "reward": self.reward, **({"extra": dict(self.extra)} if self.extra else {})},
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, line: str, source: str) -> "EpisodeRecord":
        """Parse one line; a malformed line is a :class:`ConfigError` naming the file."""
        try:
            d = json.loads(line)
            policy = {str(n): (int(p[0]), int(p[1])) for n, p in d["policy"].items()}
            return cls(int(d["episode"]), policy, PolicyMetrics.from_dict(d), float(d["reward"]), d.get("extra", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"{source}: malformed episode line ({type(exc).__name__}: {exc})") from exc

    def quant_policy(self) -> QuantPolicy:
        """The episode's policy as a :class:`QuantPolicy` (meta: episode, reward, metrics)."""
        meta = {"episode": self.episode, "reward": self.reward, "metrics": self.metrics.to_dict(), **dict(self.extra)}
        return QuantPolicy({n: LayerBits(w, a) for n, (w, a) in self.policy.items()}, meta)


class RunDir:
    """Reads and writes one run directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.episodes_path = self.path / "episodes.jsonl"
        self.best_path = self.path / "best_policy.json"
        self.checkpoint_dir = self.path / "checkpoint"

    def exists(self) -> bool:
        """Whether a run was started here (its config is written first)."""
        return self.config_path.is_file()

    def write_config(self, config: Mapping[str, Any], kind: str = "search", **derived: Any) -> None:
        """Record the settings (``config``) and derived facts (budget, reference, layers)."""
        doc = {"format": RUN_FORMAT, "version": RUN_VERSION, "kind": kind, "config": dict(config), **derived}
        atomic_write_text(self.config_path, json.dumps(doc, indent=2, allow_nan=False) + "\n")

    def read_config(self) -> dict[str, Any]:
        """The whole config.json document (validated header)."""
        try:
            doc = json.loads(self.config_path.read_text())
        except OSError as exc:
            raise ConfigError(f"{self.config_path}: cannot read run config ({exc.strerror}); is {self.path} a run directory?") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{self.config_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT or doc.get("version") != RUN_VERSION:
            raise ConfigError(f"{self.config_path}: not a haq run config (format '{RUN_FORMAT}' version {RUN_VERSION})")
        return doc

    def check_same_config(self, config: Mapping[str, Any], ignore: tuple[str, ...] = ("episodes",)) -> None:
        """Refuse to resume with different settings; names the first differing setting."""
        stored = self.read_config().get("config", {})
        diff = _first_difference({k: v for k, v in stored.items() if k not in ignore}, {k: v for k, v in config.items() if k not in ignore})
        if diff is not None:
            key, old, new = diff
            raise ConfigError(f"cannot resume {self.path}: it was written with {key}={old!r}, this run has {key}={new!r}; use a new --out or the same settings")

    def read_episodes(self) -> list[EpisodeRecord]:
        """All complete episode lines (a torn last line from a kill mid-write is ignored)."""
        if not self.episodes_path.is_file():
            return []
        lines = self.episodes_path.read_text().split("\n")
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
        """Append one line and force it to disk before returning."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.episodes_path, "a") as fh:
            fh.write(record.to_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_best(self, record: EpisodeRecord) -> None:
        """Replace best_policy.json atomically."""
        atomic_write_text(self.best_path, json.dumps(record.quant_policy().to_dict(), indent=2, allow_nan=False) + "\n")

    def read_best(self) -> EpisodeRecord | None:
        """The best episode in the log (highest reward, earliest on ties), or None."""
        records = self.read_episodes()
        return max(records, key=lambda r: (r.reward, -r.episode)) if records else None


def _first_difference(a: Any, b: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{prefix}{key}" if not prefix else f"{prefix}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12):
        return None
    return None if a == b else (prefix or "config", a, b)
