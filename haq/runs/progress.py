"""A dependency-free progress bar on stderr showing the best reward so far."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from haq.evaluation.evaluators import PolicyMetrics


@dataclass(frozen=True)
class SearchProgress:
    """Reported after every finished episode (``episode`` counts from 0)."""

    episode: int
    episodes: int
    reward: float
    best_reward: float
    best_episode: int
    metrics: PolicyMetrics
    cached: bool


class ProgressBar:
    """Redraws one line on a terminal; on a pipe, prints a line about every 5 % of the run."""

    def __init__(self, stream: TextIO | None = None, width: int = 24) -> None:
        self._stream = stream or sys.stderr
        self._width = width
        self._start = time.perf_counter()
        self._first: int | None = None
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def __call__(self, p: SearchProgress) -> None:
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
