"""``haq demo``: the main job on the embedded default (digits CNN, no download)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("demo", help="run the main job on the embedded default (digits, no download)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.cli import main

    return main(["quantize"])
