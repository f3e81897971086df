"""bench/policy_seeds.py: a policy re-scored on the pick's two halves under a range of evaluator
seeds, and a policy that is not one of the model's gets one line naming what is valid."""

from __future__ import annotations

import statistics
from types import ModuleType

import pytest
from bench_scripts import bench_module

POLICY = "conv1=8/8,conv2=4/4,conv3=4/4,fc=8/8"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return bench_module("policy_seeds")


def test_each_half_reports_the_own_seed_and_the_mean_of_the_others(
    script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert script.main(["--model", "digits_cnn", "--seeds", "2", "--seed-start", "201", "--policy", POLICY]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[1].split(" ")[0] for r in rows] == ["choose", "report"]
    for r in rows:
        own, mean, each = float(r[2]), float(r[3]), [float(x) for x in r[5].rstrip(" |").split()]
        assert len(each) == 2 and mean == pytest.approx(statistics.mean(each), abs=2e-3)
        assert len({own, *each}) > 1  # the seeds move the full evaluator's reward


def test_a_policy_missing_a_layer_is_one_line(script: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        script.main(["--seeds", "1", "--policy", "conv1=8/8,conv2=4/4"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "conv3" in err and "fc" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        script.main(["--seeds", "1", "--policy", "conv1=8"])
    assert "name=w/a" in capsys.readouterr().err
