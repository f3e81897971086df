"""The ``haq`` command: a thin shell that dispatches to one module per sub-command.

Each module in ``haq.commands`` exposes ``register(subparsers)``, which adds its parser and
sets ``func`` to a function ``(namespace) -> int``. A command's module is imported only when
that command runs: ``haq --help`` lists :data:`COMMANDS` without importing any of them, so
``haq device ...`` never loads torch and works on a target that has only onnxruntime and numpy.
Errors meant for users (:class:`HaqError`) are printed as one line; Ctrl-C exits with 130
(runs save their work as they go). So are the machine's refusals (:class:`OSError`: a full disk,
a read-only or forbidden path), named with the path and the fix; a closed stdout
(``haq ... | head``) ends the command quietly, as it ends ``cat``; anything else escaping a
command (a damaged file haq did not foresee, or a bug) is one line too, with the traceback kept
in a file (``HAQ_DEBUG=1`` lets it propagate instead).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import select
import sys
import tempfile
import traceback
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
    "serve": "the search service: submit, watch and resume jobs over HTTP (token in $HAQ_SERVICE_TOKEN)",
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
    """Run a parsed sub-command: user errors and the machine's refusals become one ``haq: error:``
    line (exit 2), an unforeseen exception one line and a saved traceback (exit 1), Ctrl-C exit
    130, a closed stdout exit 141 without a word (what a shell reports for SIGPIPE)."""
    try:
        code = int(ns.func(ns) or 0)
        sys.stdout.flush()  # a reader that went away is found here, not at interpreter exit
        return code
    except HaqError as exc:
        print(f"haq: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("haq: interrupted; finished work is saved", file=sys.stderr)
        return 130
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            return 141
        print(f"haq: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("HAQ_DEBUG"):
            raise
        print(f"haq: error: {unexpected_line(exc)}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system refusal: what failed, on which path, and what to do."""
    path = exc.filename if exc.filename is None or isinstance(exc.filename, str) else os.fsdecode(exc.filename)
    where = f" ({path})" if path else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = {
        errno.ENOSPC: "free space there and run again; finished work is saved (a run continues with --resume)",
        errno.EDQUOT: "free space within your quota and run again; finished work is saved (a run continues with --resume)",
        errno.EROFS: "the file system is read-only: choose a writable location (e.g. --out)",
        errno.EACCES: "choose a location you may write (e.g. --out) or fix its permissions",
        errno.EPERM: "choose a location you may write (e.g. --out) or fix its permissions",
        errno.EEXIST: "something already exists there: remove it or choose another path",
        errno.ENOTDIR: "a file stands where a directory is needed: choose another path",
        errno.EISDIR: "a directory stands where a file is needed: choose another path",
        errno.ENOENT: "check the path",
    }.get(exc.errno or 0, "")
    return f"{reason}{where}" + (f"; {fix}" if fix else "")


def unexpected_line(exc: BaseException) -> str:
    """One line for an exception haq did not foresee; the full traceback goes to a file it names."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix="haq-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        kept = f"traceback in {path}"
    except OSError:
        kept = "set HAQ_DEBUG=1 to see the traceback"
    return f"unexpected {type(exc).__name__}: {first} (a damaged input file or a bug in haq; {kept})"


def _stdout_closed() -> bool:
    """Whether stdout's reader went away (rather than, say, a device's socket); if so, point
    stdout at /dev/null so that the flush at interpreter exit does not raise again (the recipe
    in Python's ``signal`` documentation)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # a replaced stdout without a descriptor
        try:
            sys.stdout.flush()
            return False
        except BrokenPipeError:
            return True
    if hasattr(select, "poll"):  # a pipe without a reader polls as an error on its write end
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``haq`` console script: find the command, then parse its arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    chosen, _ = build_parser().parse_known_args(args)
    return run_command(build_parser(chosen.command).parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
