"""Run-level progress: one report per finished episode, shared by every proposer, and a
dependency-free progress bar on stderr that draws it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from haq.evaluation.metrics import PolicyMetrics
from haq.runs.rundir import EpisodeRecord


@dataclass(frozen=True)
class Progress:
    """Reported after every finished episode (``episode`` counts from 0) of a search, a
    baseline or a transfer, so one progress bar serves all three."""

    episode: int
    episodes: int
    reward: float
    best_reward: float
    best_episode: int
    metrics: PolicyMetrics
    cached: bool

    @classmethod
    def after(cls, record: EpisodeRecord, best: EpisodeRecord, episodes: int, cached: bool) -> "Progress":
        """The report once ``record`` is logged and ``best`` is the best so far."""
        return cls(record.episode, episodes, record.reward, best.reward, best.episode, record.metrics, cached)


OnProgress = Callable[[Progress], None]
"""Where a proposer sends its per-episode :class:`Progress` (e.g. a :class:`ProgressBar`)."""


class ProgressBar:
    """Redraws one line on a terminal; on a pipe, prints a line about every 5 % of the run."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self._stream = stream or sys.stderr
        self._width = width
        self._start = time.perf_counter()
        self._first: int | None = None
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def __call__(self, p: Progress) -> None:
        if self._first is None:
            self._first = p.episode
        done = p.episode + 1
        filled = int(self._width * done / max(p.episodes, 1))
        rate = (time.perf_counter() - self._start) / max(done - self._first, 1)
        line = (
            f"[{'#' * filled}{'.' * (self._width - filled)}] {done}/{p.episodes} "
            f"best {p.best_reward:+.4f} (ep {p.best_episode}) last {p.reward:+.4f} "
            f"acc {p.metrics.clean_acc:.3f} {rate:.2f}s/ep"
        )
        if self._tty:
            self._stream.write("\r" + line + ("\n" if done == p.episodes else ""))
        elif done == p.episodes or done % max(p.episodes // 20, 1) == 0:
            self._stream.write(line + "\n")
        self._stream.flush()
