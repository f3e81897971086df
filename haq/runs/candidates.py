"""Fixed candidates scored and logged as episodes: what a baseline does with its whole run and a
search with its prior rungs, in one place.

The candidates are scored in batches of ``problem.workers`` (concurrently on a worker pool), and
each becomes the store's next episode, its record keeping the candidate's provenance and how it
was scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from haq.core.types import BitPair
from haq.problem.problem import SearchProblem
from haq.runs.checkpoint import RunStore
from haq.runs.progress import OnProgress, Progress
from haq.runs.rundir import EpisodeRecord


@dataclass(frozen=True)
class Candidate:
    """One (w, a) pair per layer, in layer order, and how the proposer arrived at it (kept in the
    record's ``extra``)."""

    pairs: tuple[BitPair, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def log_candidates(
    problem: SearchProblem,
    store: RunStore,
    candidates: Sequence[Candidate],
    keep: Callable[[EpisodeRecord], None],
    total: int,
    progress: OnProgress | None,
) -> list[EpisodeRecord]:
    """Score ``candidates`` in order and hand each record to ``keep`` (``store.commit``, or
    ``store.append`` when no checkpoint is owed) as the store's next episode; progress counts
    against ``total`` episodes. Returns the records."""
    out: list[EpisodeRecord] = []
    for start in range(0, len(candidates), problem.workers):  # one batch per round of the workers
        chunk = candidates[start : start + problem.workers]
        policies = [problem.policy(c.pairs, c.meta) for c in chunk]
        for cand, policy, scored in zip(chunk, policies, problem.score_many(policies)):
            bits = {n: (b.w_bits, b.a_bits) for n, b in policy.layers.items()}
            extra = {**cand.meta, **scored.annotations()}
            record = EpisodeRecord(len(store.records), bits, scored.metrics, scored.reward, extra)
            keep(record)
            out.append(record)
            if progress is not None and store.best is not None:
                progress(Progress.after(record, store.best, total, scored.cached))
    return out
