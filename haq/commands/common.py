"""Helpers every sub-command may use. Imports no torch, so the torch-free ``haq device``
command can use it too; the workload arguments, which need torch, are in
:mod:`haq.commands.workload_args`."""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout stays machine-readable."""
    print(msg, file=sys.stderr, flush=True)
