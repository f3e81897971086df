"""Native code's writes to standard output are silenced for a block, Python's are kept in order,
and the ILP solver no longer prints HiGHS's stray debug line into haq's output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from haq.core.native_output import native_stdout_silenced


def test_a_write_to_the_descriptor_inside_is_dropped_and_python_s_output_around_it_kept(
    capfd: pytest.CaptureFixture[str],
) -> None:
    print("before", end="\n")  # buffered by Python, flushed before the redirect
    with native_stdout_silenced():
        os.write(1, b"native\n")
    print("after")
    assert capfd.readouterr().out == "before\nafter\n"


def test_the_descriptor_comes_back_when_the_block_raises(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), native_stdout_silenced():
        raise RuntimeError("inside")
    os.write(1, b"restored\n")
    assert capfd.readouterr().out == "restored\n"


def test_without_a_descriptor_to_save_the_block_runs_unchanged() -> None:
    def closed(fd: int) -> int:
        raise OSError(9, "Bad file descriptor")

    ran = []
    with pytest.MonkeyPatch.context() as mp:  # undone before any capture needs os.dup again
        mp.setattr(os, "dup", closed)
        with native_stdout_silenced():
            ran.append(True)
    assert ran == [True]


CHILD = """
import sys
import numpy as np
from haq.problem.solvers import solve_ilp
rng = np.random.default_rng(58)
layers, options = int(rng.integers(4, 25)), int(rng.integers(3, 40))
costs = [np.sort(rng.random(options))[::-1] * rng.random() for _ in range(layers)]
errors = [np.sort(rng.random(options)) * rng.random() for _ in range(layers)]
choice = solve_ilp(costs, errors, 0.5 * sum(float(c.max()) for c in costs))
print("solved", choice is not None)
"""


@pytest.mark.parametrize("unbuffered", [False, True])
def test_the_ilp_solve_prints_nothing_of_its_own(unbuffered: bool) -> None:
    """On this problem (found by drawing random ones) HiGHS prints ``HighsMipSolverData::...``
    twice. The solve runs in a child process whose whole output is read: with standard output a
    pipe, the C library holds the lines until the process exits, unless Python was told to leave
    its standard streams unbuffered (``PYTHONUNBUFFERED``, which unbuffers the C library's too)."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300, check=True)
    assert done.stdout == "solved True\n"
