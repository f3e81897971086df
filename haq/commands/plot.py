"""``haq plot``: PNG figures of a search run, with baseline runs overlaid."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("plot", help="draw reward, accuracy-vs-cost and bit-width PNGs of a run directory")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by haq search or haq baseline")
    p.add_argument("--baselines", nargs="+", default=[], metavar="DIR", help="baseline run directories to overlay")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: RUN_DIR)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.plots import plot_run

    for path in plot_run(ns.run_dir, ns.baselines, ns.out):
        print(path)
    return 0
