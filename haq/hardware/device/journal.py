"""The sessions an interrupted batch already timed, so that timing it again resumes instead of
starting over.

Timing a batch of whole models (a fit's 24 configurations of a network, each in up to 10 fresh
sessions) takes minutes for a small network and far longer for a large one, and until now a kill
lost all of it. The journal is a JSON-lines file: a header naming the protocol, then one line per
timed session (the model's SHA-256, its samples, its runs per sample) or sentinel median,
appended and forced to disk as each is timed. A batch timed again with a journal of the same
protocol reuses the sessions of its models and times only the rest; the caller removes the
journal once the batch's results are kept elsewhere. The journal is a cache: one written for
another protocol, or one that cannot be read, is started anew (with a line saying so), never
trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from haq.core import jsonio
from haq.core.errors import DeviceError
from haq.core.fileio import append_durably, atomic_write_text
from haq.core.types import Log

JOURNAL_FORMAT = "haq.session_journal"
JOURNAL_VERSION = 1
Session = tuple[tuple[float, ...], int]
"""One timed session: its samples (ms per run) and the runs in each sample."""


def model_digest(model: bytes) -> str:
    """What names a model in the journal: the SHA-256 of its bytes."""
    return hashlib.sha256(model).hexdigest()


@dataclass
class SessionJournal:
    """The journal at ``path`` for batches timed with ``protocol`` (a protocol's dict)."""

    path: Path
    protocol: Mapping[str, Any]
    log: Log | None = None
    sessions: dict[str, list[Session]] = field(default_factory=dict)
    sentinel_ms: list[float] = field(default_factory=list)

    def open(self) -> None:
        """Read what an earlier attempt recorded under this protocol; start the file anew when
        there is none, it was written for another protocol, or it cannot be read."""
        head = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "protocol": dict(self.protocol)}
        if self.path.exists():
            try:
                if self._read(head):
                    return
            except (DeviceError, KeyError, TypeError, ValueError) as exc:
                if self.log:
                    self.log(f"warning: session journal {self.path} is unreadable ({exc}); timing the batch from the start")
        self.sessions, self.sentinel_ms = {}, []
        atomic_write_text(self.path, json.dumps(head, sort_keys=True) + "\n")

    def record(self, digest: str, samples: Sequence[float], runs_per_sample: int) -> None:
        """One session of the model named ``digest`` (forced to disk before returning)."""
        self.sessions.setdefault(digest, []).append((tuple(samples), runs_per_sample))
        line = {"model": digest, "samples": list(samples), "runs_per_sample": runs_per_sample}
        append_durably(self.path, json.dumps(line) + "\n")

    def record_sentinel(self, median_ms: float) -> None:
        """One median of the drift sentinel."""
        self.sentinel_ms.append(median_ms)
        append_durably(self.path, json.dumps({"sentinel_ms": median_ms}) + "\n")

    def discard(self) -> None:
        """Remove the file: the batch's results are kept elsewhere now."""
        self.path.unlink(missing_ok=True)

    def _read(self, head: Mapping[str, Any]) -> bool:
        """Load the sessions when the file's header is ``head``; False when it is another's."""
        text = jsonio.read_text(self.path, "session journal", max_bytes=jsonio.MAX_LOG_BYTES, error=DeviceError)
        lines = text.splitlines()
        if not lines or jsonio.loads(lines[0], str(self.path), error=DeviceError) != head:
            return False
        sessions: dict[str, list[Session]] = {}
        sentinel: list[float] = []
        for raw in lines[1:]:
            if not raw.strip():
                continue
            row = jsonio.loads(raw, str(self.path), error=DeviceError)
            if "sentinel_ms" in row:
                sentinel.append(_positive(row["sentinel_ms"]))
                continue
            samples = tuple(_positive(v) for v in row["samples"])
            runs = int(row["runs_per_sample"])
            if not samples or runs < 1:
                raise ValueError(f"a session needs samples and runs_per_sample >= 1, got {raw[:80]!r}")
            sessions.setdefault(str(row["model"]), []).append((samples, runs))
        self.sessions, self.sentinel_ms = sessions, sentinel
        return True


def _positive(value: Any) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"times must be finite and > 0, got {value!r}")
    return number


__all__ = ["JOURNAL_FORMAT", "JOURNAL_VERSION", "Session", "SessionJournal", "model_digest"]
