"""The done-when flow for a user's own model file (``module:callable`` on the Python path) and
image folder: trained here or fine-tuned from a checkpoint, priced on an analytical device and on
this CPU (``tables build`` / ``fit`` / ``check`` with the quickest protocol), searched, exported
and costed; and the mistakes a new user makes are one line naming the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from cli_helpers import haq, one_line_error, weight_dtypes

Image = pytest.importorskip("PIL.Image")

USER_MODEL = """
from torch import nn


def net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2),
    )
"""
QUICK = [
    "--sessions",
    "1",
    "--repeats",
    "3",
    "--warmup-runs",
    "1",
    "--warmup-s",
    "0",
    "--min-repeat-ms",
    "0.2",
    "--max-retries",
    "0",
    "--sentinel-every",
    "0",
]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The train / val layout: 2 classes × 8 training and 2 validation images."""
    root = tmp_path_factory.mktemp("user-images")
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("val", 2)):
        for c in ("ok", "defect"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / split / c / f"{i}.jpg")
    return root


@pytest.fixture(autouse=True)
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[None]:
    (tmp_path / "mine.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HAQ_CACHE_DIR", str(cache_dir))
    yield
    sys.modules.pop("mine", None)


def test_user_model_trained_here_searched_exported_and_costed(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--dataset", "imagefolder", "--data-root", str(images), "--input-size", "32"]
    assert (
        haq("tables", "build", "--model", "mine:net", "--input-shape", "3,32,32", "--device", "bitfusion", "--out", "bf.json")
        == 0
    )
    assert json.loads(Path("bf.json").read_text())["meta"]["inputs"] == {"mine:net": [[3, 32, 32]]}
    assert (
        haq(
            "search",
            "--model",
            "mine:net",
            *data,
            "--train-epochs",
            "2",
            "--device",
            "bf.json",
            "--evaluator",
            "cheap",
            "--episodes",
            "2",
            "--out",
            "run",
        )
        == 0
    )
    assert "search: 2 episodes in run" in capsys.readouterr().out
    assert (
        haq(
            "export",
            "--model",
            "mine:net",
            *data,
            "--train-epochs",
            "2",
            "--policy",
            "run/best_policy.json",
            "--onnx",
            "mine.onnx",
            "--emulate",
        )
        == 0
    )
    assert weight_dtypes(Path("mine.onnx").read_bytes()) == {np.dtype(np.uint8)}
    capsys.readouterr()
    assert (
        haq(
            "cost",
            "--model",
            "mine:net",
            "--input-shape",
            "3,32,32",
            "--policy",
            "run/best_policy.json",
            "--device",
            "bf.json",
            "bitfusion",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| run/best_policy.json |" in out and "n/a" in out  # the shipped table lacks this model's layers...
    assert (
        "`haq tables build --model mine:net --input-shape 3,32,32 --batch 1 --device bitfusion --out my-bitfusion.json`" in out
    )  # ...and the output says how to price them


def test_checkpoint_fine_tuned_on_the_users_data(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mine import net  # type: ignore[import-not-found]

    torch.save(net().state_dict(), tmp_path / "w.pt")
    assert (
        haq(
            "tables",
            "build",
            "--model",
            "mine:net",
            "--input-size",
            "32",
            "--dataset",
            "imagefolder",
            "--device",
            "bitfusion",
            "--out",
            "bf.json",
        )
        == 0
    )
    assert (
        haq(
            "search",
            "--model",
            "mine:net",
            "--dataset",
            "imagefolder",
            "--data-root",
            str(images),
            "--input-size",
            "32",
            "--checkpoint",
            "w.pt",
            "--finetune-epochs",
            "1",
            "--device",
            "bf.json",
            "--evaluator",
            "cheap",
            "--episodes",
            "2",
            "--out",
            "run",
        )
        == 0
    )
    workload = json.loads(Path("run/config.json").read_text())["config"]["env"]["workload"]
    assert workload["checkpoint"] == "w.pt" and workload["finetune_epochs"] == 1


def test_a_new_users_mistakes_are_one_line(images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        haq("tables", "build", "--model", "mine:net", "--input-shape", "3,32,32", "--device", "bitfusion", "--out", "bf.json")
        == 0
    )
    search = ["search", "--model", "mine:net", "--device", "bf.json", "--evaluator", "cheap", "--episodes", "2"]
    data = ["--dataset", "imagefolder", "--data-root", str(images), "--input-size", "32"]
    line = one_line_error(capsys, *search, *data)
    assert "pass --checkpoint FILE" in line and "--train-epochs N" in line
    line = one_line_error(capsys, *search, "--train-epochs", "1")  # no data named: digits' 1×8×8 does not fit an RGB model
    assert "input 1x8x8 from dataset digits" in line and "--input-shape C,H,W" in line
    line = one_line_error(capsys, *search, "--train-epochs", "1", "--input-shape", "3,32,32")
    assert "name the data with --dataset" in line
    assert "--finetune-epochs fine-tunes a --checkpoint" in one_line_error(capsys, *search, *data, "--finetune-epochs", "1")
    line = one_line_error(capsys, "tables", "build", "--model", "mine:nope", "--input-shape", "3,32,32", "--device", "bitfusion")
    assert "has no attribute 'nope'" in line


def test_users_cpu_table_built_fitted_and_checked_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """Measures on this CPU with the quickest protocol settings (about 10 s)."""
    shape = ["--input-shape", "3,32,32"]
    assert haq("tables", "build", "--model", "mine:net", *shape, "--device", "cpu", "--out", "cpu.json", *QUICK) == 0
    assert json.loads(Path("cpu.json").read_text())["meta"]["inputs"] == {"mine:net": [[3, 32, 32]]}
    assert haq("tables", "fit", "--model", "mine:net", *shape, "--device", "cpu.json", "--configs", "3", "--sessions", "1") == 0
    assert "1 network corrections" in capsys.readouterr().out
    assert haq("tables", "check", "--model", "mine:net", *shape, "--device", "cpu.json", "--n", "3", "--sessions", "1") == 0
    assert "| table policy_cost | 3 |" in capsys.readouterr().out
    assert haq("tables", "show", "cpu.json", "--model", "mine:net", *shape) == 0
    assert "network: cheapest" in capsys.readouterr().out
