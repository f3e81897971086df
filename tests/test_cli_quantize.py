"""`haq quantize`: the foundation's command, and one-line errors from the CLI shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from haq.cli import main
from haq.quant import QuantPolicy
from haq.workload import Workload


@pytest.fixture(autouse=True)
def _cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, digits_workload: Workload) -> None:
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))


def test_quantize_uniform(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "--bits", "8", "4"]) == 0
    out = capsys.readouterr().out
    assert "| uniform 8/8 |" in out and "| float |" in out


def test_quantize_policy_file(tmp_path: Path, digits_workload: Workload, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "p.json"
    QuantPolicy.uniform(digits_workload.layer_names, 6, 8).save(p)
    assert main(["quantize", "--policy", str(p)]) == 0
    assert str(p) in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["quantize", "--model", "nope"], "unknown model 'nope'"),
        (["quantize", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["quantize", "--bits", "9"], "out of range"),
        (["quantize", "--policy", "/no/such/file.json"], "cannot read policy file"),
        (["quantize", "--torch-device", "cuda:7"] , "cuda"),
    ],
)
def test_errors_are_one_line(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("haq: error:") and match in err[-1]
