"""`haq quantize`: the foundation's command, and one-line errors from the CLI shell."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from haq.cli import main
from haq.evaluation.ptq import evaluate_policy_ptq
from haq.quant import QuantPolicy, model_size_bits
from haq.training import accuracy
from haq.workload import Workload


def _rows(out: str) -> dict[str, tuple[float, float]]:
    """The printed table as {policy: (test accuracy, weight KiB)}."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("policy", "---"):
            rows[cells[0]] = (float(cells[1]), float(cells[2]))
    return rows


def _expected(wl: Workload, policy: QuantPolicy) -> tuple[float, float]:
    """What the command must print for ``policy``, computed here through the library."""
    r = evaluate_policy_ptq(wl.model, wl.layers, policy, wl.data, torch.device("cpu"))
    return round(r.accuracy, 4), round(model_size_bits(wl.layers, policy) / 8192, 1)


def test_quantize_uniform(digits_workload: Workload, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "--bits", "8", "4"]) == 0
    out = capsys.readouterr().out
    wl = digits_workload
    x, y = wl.data.subset("test", None)
    assert out.splitlines()[0] == f"digits_cnn on digits: {len(wl.layers)} quantizable layers, test set {len(y)} images"
    rows = _rows(out)
    assert list(rows) == ["float", "uniform 8/8", "uniform 4/4"]
    float_kib = round(sum(layer.params for layer in wl.layers) * 32 / 8192, 1)
    assert rows["float"] == (round(accuracy(wl.model, x, y, torch.device("cpu")), 4), float_kib)
    for bits in (8, 4):
        assert rows[f"uniform {bits}/{bits}"] == _expected(wl, QuantPolicy.uniform(wl.layer_names, bits))
    assert rows["uniform 4/4"][1] < rows["uniform 8/8"][1] < rows["float"][1]
    assert rows["uniform 8/8"][0] > 0.9


def test_quantize_policy_file(tmp_path: Path, digits_workload: Workload, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    policy = QuantPolicy.uniform(digits_workload.layer_names, 6, 8)
    policy.save(p)
    assert main(["quantize", "--policy", str(p)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert list(rows) == ["float", str(p)]
    assert rows[str(p)] == _expected(digits_workload, policy)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["quantize", "--model", "nope"], "unknown model 'nope'"),
        (["quantize", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["quantize", "--bits", "9"], "out of range"),
        (["quantize", "--policy", "/no/such/file.json"], "cannot read policy file"),
        (["quantize", "--torch-device", "cuda:7"], "cuda"),
    ],
)
def test_errors_are_one_line(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("haq: error:") and match in err[-1]
