"""bench/export_containers.py: both weight containers exported and compared with the fake-quantized
model; the uint8 default matches it on any CPU (int8's error depends on the CPU's kernels)."""

from __future__ import annotations

from types import ModuleType

import pytest
from bench_scripts import bench_module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return bench_module("export_containers")


def test_both_containers_are_compared_and_uint8_matches_the_fake_quantized_model(
    script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.main(["--models", "digits_cnn", "--images", "8", "--sessions", "2"]) == 0
    rows = [line.strip("| ").split(" | ") for line in capsys.readouterr().out.splitlines()[3:]]
    assert [r[1] for r in rows] == ["uint8", "int8", "uint8 / int8 latency"]
    uint8 = rows[0]
    assert float(uint8[2].rstrip("%")) < 1.0 and uint8[3] == "100.0%"
    assert float(rows[2][-1].rstrip("x")) > 0


def test_bad_counts_and_models_are_one_line(script: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        script.main(["--images", "0"])
    assert "--images and --sessions must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--models", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
