"""Arguments every command that builds a search problem shares: ``--strict`` for the tables it
loads, ``--workers`` / ``--ray-address`` for where it evaluates. The problem itself is built by
:func:`haq.jobs.problems.make_problem`, which the service's jobs use too."""

from __future__ import annotations

import argparse


def add_strict_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:  # noqa: SLF001 - argparse's group type
    """``--strict``, for every command that loads tables to search, evaluate or cost with."""
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse, instead of warning about, a measured table timed on another machine (or one that cannot say "
        "which) and a table that prices the model's cheapest policy at zero or less",
    )


def add_parallel_args(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--ray-address``, for the commands that evaluate many policies."""
    g = p.add_argument_group("parallel evaluation")
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="evaluate this many policies at once on Ray workers that each load the model once (1: in-process)",
    )
    g.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this Ray cluster instead of starting a local one (`ray start --head` prints the address)",
    )


__all__ = ["add_parallel_args", "add_strict_arg"]
