"""Turning names into concrete things: the one place that resolves a table name into a cost
table and (with hardware feedback) builds the measuring cost source, then the search problem."""

from __future__ import annotations

from pathlib import Path

import latency_tables
from haq.core.types import Log
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem, build_problem
from haq.tables.protocols import DeviceTable


def make_problem(
    cfg: EnvConfig,
    *,
    cache_dir: Path | None = None,
    log: Log | None = None,
    feedback_cache: Path | None = None,
    table: DeviceTable | None = None,
) -> SearchProblem:
    """The search problem for ``cfg``: its table resolved by name unless one is given."""
    tab = table if table is not None else latency_tables.load(cfg.table)
    return build_problem(cfg, cache_dir=cache_dir, log=log, table=tab, feedback_cache=feedback_cache)
