"""The done-when flow from a fresh clone, at 224×224: price ResNet-18 for a device, search on an
image folder, export and cost the result; and every bad combination is one line naming its fix.

The folder is tiny (2 classes × 6 images of 64×64, decoded to 224×224) and the evaluator cheap,
so the whole flow runs in seconds on a CPU.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import haq, one_line_error, weight_dtypes

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))


def test_resnet18_at_224_from_table_to_export(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--dataset", "imagefolder", "--data-root", str(images), "--input-size", "224"]
    assert (
        haq(
            "tables",
            "build",
            "--model",
            "resnet18",
            "--input-size",
            "224",
            "--batch",
            "16",
            "--device",
            "bismo-cloud",
            "--out",
            "T.json",
        )
        == 0
    )
    meta = json.loads(Path("T.json").read_text())["meta"]
    assert meta["batch"] == 16 and meta["inputs"] == {"resnet18": [[3, 224, 224]]} and meta["models"] == ["resnet18"]

    assert (
        haq(
            "search",
            "--model",
            "resnet18",
            *data,
            "--train-epochs",
            "0",
            "--device",
            "T.json",
            "--evaluator",
            "cheap",
            "--episodes",
            "2",
            "--out",
            "run",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "search: 2 episodes in run" in out
    workload = json.loads(Path("run/config.json").read_text())["config"]["env"]["workload"]
    assert workload["input_size"] == 224 and workload["dataset"] == "imagefolder"  # recorded in the run directory

    assert (
        haq(
            "export",
            "--model",
            "resnet18",
            *data,
            "--train-epochs",
            "0",
            "--policy",
            "run/best_policy.json",
            "--onnx",
            "r18.onnx",
            "--calibration",
            "4",
            "--emulate",
            "--int8-weights",
        )
        == 0
    )
    assert "21 layers" in capsys.readouterr().out and Path("r18.onnx").stat().st_size > 1_000_000
    assert weight_dtypes(Path("r18.onnx").read_bytes()) == {np.dtype(np.int8)}

    assert (
        haq("cost", "--model", "resnet18", "--input-size", "224", "--policy", "run/best_policy.json", "--device", "T.json") == 0
    )
    assert re.search(r"\| run/best_policy.json \| [\d.]+ ms \([\d.]+x\) \|", capsys.readouterr().out)

    assert (
        haq(
            "evaluate",
            "--model",
            "resnet18",
            *data,
            "--train-epochs",
            "0",
            "--policy",
            "run/best_policy.json",
            "--device",
            "T.json",
            "--evaluator",
            "cheap",
            "--samples",
            "2",
        )
        == 0
    )
    assert "2 test images" in capsys.readouterr().out


def test_bad_combinations_are_one_line_naming_the_fix(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert haq("tables", "build", "--model", "resnet18", "--batch", "16", "--device", "bismo-cloud", "--out", "T.json") == 0
    capsys.readouterr()
    data = ["--dataset", "imagefolder", "--data-root", str(images)]
    search = ["search", "--model", "resnet18", "--train-epochs", "0", "--evaluator", "cheap", "--episodes", "2"]

    line = one_line_error(capsys, *search, *data, "--input-size", "160", "--device", "T.json")  # table priced at 224
    assert "cannot cost layer 'conv1'" in line and "3x160x160" in line
    assert (
        f"`haq tables build --model resnet18 --dataset imagefolder --data-root {images} --input-size 160 --batch 16 "
        "--device bismo-cloud --out T.json`"
    ) in line
    assert not Path("runs").exists()  # refused before any training or run directory

    line = one_line_error(capsys, *search, *data, "--input-size", "160", "--device", "bismo-cloud")
    assert "--out my-bismo-cloud.json`, then pass --device my-bismo-cloud.json" in line  # never the shipped file
    assert "latency_tables" not in line

    assert "pass --data-root DIR" in one_line_error(capsys, *search, "--dataset", "imagefolder", "--device", "T.json")
    assert "contradicts" in one_line_error(
        capsys, *search, *data, "--input-size", "160", "--input-shape", "3,224,224", "--device", "T.json"
    )
    with pytest.raises(SystemExit):  # argparse's own one-line usage error
        haq("cost", "--model", "resnet18", "--input-shape", "3,224", "--policy", "p.json")
    assert "expected three positive integers C,H,W" in capsys.readouterr().err
    assert "has 1 channel(s), but the input shape asks for 3" in one_line_error(
        capsys,
        "tables",
        "build",
        "--model",
        "resnet18",
        "--dataset",
        "digits",
        "--input-shape",
        "3,224,224",
        "--device",
        "bitfusion",
        "--out",
        "x.json",
    )
