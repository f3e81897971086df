"""The ``haq`` command: a thin shell that dispatches to one module per sub-command.

Each module in ``haq.commands`` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function ``(namespace) -> int``. Errors meant for users (:class:`HaqError`)
are printed as one line; Ctrl-C exits with 130 (runs save their work as they go).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from haq import __version__
from haq.core.errors import HaqError

COMMANDS = ("demo", "quantize", "device", "tables", "search", "baseline", "evaluate", "plot", "export", "transfer", "cost", "robust")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests and docs)."""
    parser = argparse.ArgumentParser(prog="haq", description="Hardware- and robustness-aware mixed-precision quantization.")
    parser.add_argument("--version", action="version", version=f"haq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"haq.commands.{name}").register(sub)
    return parser


def run_command(ns: argparse.Namespace) -> int:
    """Run a parsed sub-command: user errors become one ``haq: error:`` line (exit 2) and
    Ctrl-C exit 130."""
    try:
        return int(ns.func(ns) or 0)
    except HaqError as exc:
        print(f"haq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haq: interrupted; finished work is saved", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``haq`` console script."""
    parser = build_parser()
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
