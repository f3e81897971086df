"""Running ``haq`` in-process from end-to-end tests, reading the one error line a bad command
prints, and reading what an exported model stores."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

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


def weight_dtypes(onnx_bytes: bytes) -> set[np.dtype]:
    """The dtypes of an exported model's 8-bit-container weight codes (the layers' ``w_q`` initializers)."""
    model = onnx.load_from_string(onnx_bytes)
    inits = {t.name: t for t in model.graph.initializer}
    return {
        numpy_helper.to_array(inits[n.input[0]]).dtype
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0].endswith("/w_q")
    }
