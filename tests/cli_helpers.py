"""Running ``haq`` in-process from end-to-end tests, and reading the one error line a bad command prints."""

from __future__ import annotations

import pytest

from haq.cli import main as haq_main


def haq(*argv: str) -> int:
    """``haq ARGV...`` in this process; its exit status."""
    return haq_main(list(argv))


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run a command that must fail; return its single error line."""
    assert haq(*argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("haq: error:")]
    assert len(err) == 1, err
    return err[0]
