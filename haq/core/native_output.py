"""Silencing what native code prints to the process's standard output.

HiGHS (scipy's ``milp``) prints a debug line, ``HighsMipSolverData::transformNewIntegerFeasibleSolution
tmpSolver.run();``, straight to file descriptor 1 on some problems whatever its display options say
(ERGO-Code/HiGHS#2783), so it lands in the middle of ``haq``'s own output and in anything parsing
it. ``sys.stdout`` cannot catch a C ``printf``; only the descriptor can be pointed elsewhere, and
the C library's own buffer must be flushed before it is pointed back: writing to a pipe or a file,
the C library holds the line until the process exits, by when the descriptor is the real one again.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Iterator

STDOUT_FD = 1


def _flush_c_streams() -> None:
    """``fflush(NULL)``: write out what native code has buffered on every C stream, where the C
    library can be found (not every platform exports it to ``ctypes``)."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        return


@contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Point file descriptor 1 at the null device for the block, and back afterwards.

    The redirect is process-wide while it lasts, so keep the block to the native call alone; what
    Python and native code buffered for standard output before it is flushed first, so none of it is
    lost or reordered; what native code buffered inside is flushed into the null device before the
    descriptor comes back. Where the descriptor cannot be duplicated (standard output closed), the
    block runs unchanged.
    """
    sys.stdout.flush()
    _flush_c_streams()
    try:
        saved: int | None = os.dup(STDOUT_FD)
    except OSError:
        saved = None
    if saved is None:
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, STDOUT_FD)
        finally:
            os.close(null)
        yield
    finally:
        sys.stdout.flush()
        _flush_c_streams()
        os.dup2(saved, STDOUT_FD)
        os.close(saved)


__all__ = ["native_stdout_silenced"]
