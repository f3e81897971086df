"""The ``haq`` command: a thin shell that dispatches to one module per sub-command.

Each module in ``haq.commands`` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function ``(namespace) -> int``. A command's module is imported only when
that command runs: ``haq --help`` lists :data:`COMMANDS` without importing any of them, so
``haq device ...`` never loads torch and works on a target that has only onnxruntime and numpy.
Errors meant for users (:class:`HaqError`) are printed as one line; Ctrl-C exits with 130
(runs save their work as they go).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from haq import __version__
from haq.core.errors import HaqError

COMMANDS: dict[str, str] = {
    "demo": "a short bit-width search on the embedded default (digits CNN, Bit Fusion; no download)",
    "quantize": "quantize a model (uniform bits or a policy) and report accuracy and size",
    "device": "hardware in the loop: serve a device agent, ping one, time an ONNX model",
    "tables": "build, list and inspect device cost tables",
    "search": "search per-layer bit widths under a latency / energy / size budget (RL agent)",
    "baseline": "uniform / random / greedy / ILP bit widths under the same budget and evaluator as haq search",
    "evaluate": "fine-tune a policy fully and report clean / robust accuracy and its cost on a device",
    "plot": "draw reward, accuracy-vs-cost and bit-width PNGs of a run directory",
    "export": "export a model under a policy as onnxruntime-ready QDQ ONNX",
    "transfer": "roll a trained search agent out on a new device table, then fine-tune it there",
    "cost": "a policy's latency / energy on every shipped device table (policy tuned for X, run on Y)",
    "robust": "adversarial robustness (per attack and worst case) of a quantized model",
}
"""Sub-command name -> the line ``haq --help`` shows for it; the module is ``haq.commands.<name>``."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with ``command``'s arguments registered (its module imported).

    Every other command is listed by name and summary only, and accepts any arguments, so
    ``build_parser()`` (no command) imports no command module: it is what finds out which
    command to load.
    """
    parser = argparse.ArgumentParser(prog="haq", description="Hardware- and robustness-aware mixed-precision quantization.")
    parser.add_argument("--version", action="version", version=f"haq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"haq.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
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
    """Entry point of the ``haq`` console script: find the command, then parse its arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    chosen, _ = build_parser().parse_known_args(args)
    return run_command(build_parser(chosen.command).parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
