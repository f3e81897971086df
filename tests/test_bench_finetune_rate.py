"""bench/finetune_rate.py: each candidate DQ fine-tune rate's noise and rank agreement with the
final evaluation, resumed from its file, and bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import bench_module

POLICIES = [
    "conv1=8/8,conv2=4/4,conv3=4/4,fc=8/8",
    "conv1=8/8,conv2=2/2,conv3=2/3,fc=8/8",
    "conv1=6/6,conv2=3/3,conv3=5/5,fc=8/8",
]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return bench_module("finetune_rate")


def test_each_rate_gets_its_noise_and_agreement_and_a_rerun_measures_nothing_again(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rates.json"
    args = ["--rates", "1e-3", "50", "--seeds", "2", "--truth-seeds", "1", "--truth-epochs", "1", "--out", str(out)]
    for policy in POLICIES:
        args += ["--policy", policy]
    assert script.main(args) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert sorted(doc["stages"]) == ["search-0.001", "search-50", "truth-0.001", "truth-50"]
    assert all(len(rows) == 3 and len(rows[0]) == (2 if k.startswith("search") else 1) for k, rows in doc["stages"].items())
    ruined = sum(map(sum, doc["stages"]["truth-50"])) < sum(map(sum, doc["stages"]["truth-0.001"]))
    assert ruined and "final evaluation at 50:" in printed and "above the one at 0.001 for 0 of 3 policies" in printed
    assert len([line for line in printed.splitlines() if line.startswith("| 0.001 |") or line.startswith("| 50 |")]) == 4
    (tmp_path / "stamp").write_text(out.read_text())
    assert script.main(args) == 0 and out.read_text() == (tmp_path / "stamp").read_text()  # resumed: nothing measured again
    assert capsys.readouterr().out == printed


def test_other_policies_on_the_same_file_and_too_few_policies_are_one_line(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rates.json"
    out.write_text(json.dumps({"policies": [], "seeds": 2, "truth_seeds": 1, "truth_epochs": 1, "stages": {}}))
    with pytest.raises(SystemExit, match="other policies or seeds"):
        script.main(
            [
                "--seeds",
                "2",
                "--truth-seeds",
                "1",
                "--truth-epochs",
                "1",
                "--out",
                str(out),
                "--policy",
                POLICIES[0],
                "--policy",
                POLICIES[1],
            ]
        )
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "x.json"), "--policy", POLICIES[0]])
    assert "at least two policies" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--policy"):
        script.main(["--out", str(tmp_path / "y.json"), "--policy", "conv1=8/8", "--policy", POLICIES[0]])
