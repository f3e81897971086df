"""Type aliases shared across haq: defined once here, imported everywhere else."""

from __future__ import annotations

import sys
from typing import Callable

BitPair = tuple[int, int]
"""A layer's (weight bits, activation bits); 32 means the layer stays float."""

Log = Callable[[str], None]
"""Where a long job sends its one-line progress messages (``haq`` prints them on stderr)."""


def quiet(_msg: str) -> None:
    """A :data:`Log` that drops every message."""


def stderr_log(msg: str) -> None:
    """A :data:`Log` that prints on stderr, so stdout stays machine-readable: what the commands
    and a problem built without a log of its own report progress with."""
    print(msg, file=sys.stderr, flush=True)
