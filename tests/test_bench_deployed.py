"""bench/deployed.py: haq's pick made again on each benchmark run, then the chosen policy's final
evaluation at the run's own fine-tune rate; rows written one at a time and resumed."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import bench_module

ARGS = ["--quick", "--models", "digits_cnn", "--methods", "uniform", "random", "--seeds", "0", "--evaluations", "4"]


@pytest.fixture(scope="module")
def modules() -> tuple[ModuleType, ModuleType]:
    return bench_module("search_quality"), bench_module("deployed")


def test_each_run_gets_its_deployed_reward_once(
    modules: tuple[ModuleType, ModuleType], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sq, dep = modules
    runs = tmp_path / "sq"
    assert sq.main([*ARGS, "--out", str(runs)]) == 0
    out = tmp_path / "dep"
    assert dep.main([str(runs), "--out", str(out), "--seeds", "1", "--methods", "random"]) == 0
    rows = json.loads((out / dep.ROWS).read_text())
    assert [(r["method"], r["seed"], r["finetune_lr"]) for r in rows] == [("random", 0, 1e-3)]
    logged = {r.episode for r in dep.RunDir(sq.run_dir(runs, "digits_cnn", "random", 0)).read_episodes()}
    assert rows[0]["episode"] in logged and 0.0 < rows[0]["clean"] <= 1.0
    assert rows[0]["rewards"] == [pytest.approx(rows[0]["reward"])]
    assert "| digits_cnn | random | 0.001 | 1 |" in capsys.readouterr().out
    assert dep.main([str(runs), "--out", str(out), "--seeds", "2"]) == 0  # the random run is kept, uniform's is added
    again = json.loads((out / dep.ROWS).read_text())
    assert again[0] == rows[0] and [r["method"] for r in again] == ["random", "uniform"]
    uniform = again[1]
    assert len(uniform["rewards"]) == 2 and uniform["reward"] == pytest.approx(sum(uniform["rewards"]) / 2)
    spread = abs(uniform["rewards"][0] - uniform["rewards"][1]) / 2**0.5
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| digits_cnn | uniform"))
    assert line.endswith(f"| {spread:.3f} |") and dep.table(rows).splitlines()[-1].endswith("| n/a |")
    before = [{k: v for k, v in uniform.items() if k != "rewards"}]  # a row written before seeds were kept
    assert dep.table(before).splitlines()[-1].endswith("| n/a |")
    with pytest.raises(SystemExit):
        dep.main([str(tmp_path), "--out", str(out)])
    assert "holds no results.json" in capsys.readouterr().err
