"""Type aliases shared across haq: defined once here, imported everywhere else."""

from __future__ import annotations

from typing import Callable

BitPair = tuple[int, int]
"""A layer's (weight bits, activation bits); 32 means the layer stays float."""

Log = Callable[[str], None]
"""Where a long job sends its one-line progress messages (``haq`` prints them on stderr)."""


def quiet(_msg: str) -> None:
    """A :data:`Log` that drops every message."""
