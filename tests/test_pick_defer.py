"""The deferring pick keeps the run's most proposed policy unless another candidate beats it on
the held-out images by more than a margin: the rule itself, what a search writes with it, and the
setting's validation (the pick on a real problem: ``tests/test_fidelity_pick.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haq.cli import main as haq_main
from haq.core.errors import ConfigError
from haq.problem.config import RewardConfig
from haq.problem.reward import image_reward
from haq.problem.select import deferring
from haq.runs.final_pick import PICK_FILE, PickConfig
from haq.runs.rundir import RunDir


def test_the_settled_candidate_is_kept_unless_beaten_by_more_than_the_margin() -> None:
    rewards = {0: 1.00, 1: 0.95, 4: 0.90}
    assert deferring([0, 1, 4], rewards, 4, 0.05) == 0  # beaten by 0.10
    assert deferring([0, 1, 4], rewards, 4, 0.10) == 4  # by exactly the margin: kept
    assert deferring([0, 1, 4], rewards, 4, 0.2) == 4
    assert deferring([0, 1, 4], rewards, None, 0.2) == 0  # nothing settled: the best there
    assert deferring([0, 1, 4], rewards, 0, 0.2) == 0  # the settled one is the best anyway


@given(
    st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=1, max_size=8),
    st.integers(0, 7),
    st.floats(0.0, 2.0, allow_nan=False),
)
def test_the_choice_is_the_settled_one_or_the_best_and_never_loses_more_than_the_margin(
    values: list[float], at: int, margin: float
) -> None:
    top = list(range(len(values)))
    rewards = dict(enumerate(values))
    settled = at % len(values)
    chosen = deferring(top, rewards, settled, margin)
    best = max(values)
    assert chosen in (settled, values.index(best))
    assert rewards[chosen] >= best - margin
    assert deferring(top, rewards, settled, 0.0) == values.index(best) or values[settled] == best


def test_one_image_s_worth_is_the_clean_term_of_one_image() -> None:
    cfg = RewardConfig()
    assert image_reward(cfg, 300) == pytest.approx(cfg.acc_weight * 100.0 / 300)
    assert image_reward(cfg, 180) * 180 == pytest.approx(image_reward(cfg, 1))
    with pytest.raises(ValueError, match="image count"):
        image_reward(cfg, 0)


def test_the_setting_is_validated_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="defer"):
            PickConfig(defer=bad)
    assert haq_main(["search", "--pick-defer", "-1", "--episodes", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("haq: ")]
    assert len(err) == 1 and "defer" in err[0], err


def test_a_search_writes_which_episode_the_pick_deferred_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    agent = ["--decision", "layer", "--warmup", "2"]  # a per-layer agent: this seed repeats a policy
    args = ["search", "--evaluator", "cheap", *agent, "--episodes", "8", "--seed", "2", "--pick", "1"]
    assert haq_main([*args, "--pick-repeats", "0", "--pick-defer", "0", "--out", str(tmp_path / "plain")]) == 0
    plain: dict[str, Any] = json.loads((tmp_path / "plain" / PICK_FILE).read_text())
    assert plain["settled_episode"] is None and len(plain["candidates"]) == 1
    capsys.readouterr()
    out = tmp_path / "run"
    assert haq_main([*args, "--pick-repeats", "0", "--pick-defer", "1000", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    doc: dict[str, Any] = json.loads((out / PICK_FILE).read_text())
    proposals: dict[str, list[int]] = {}
    for r in RunDir(out).read_episodes():
        proposals.setdefault(json.dumps(sorted(r.policy.items())), []).append(r.episode)
    most = max(proposals.values(), key=lambda eps: (len(eps), -eps[0]))
    assert len(most) >= 2 and doc["settled_episode"] == most[0] == doc["episode"]  # this seed repeats a policy
    assert doc["episode"] != plain["episode"]  # ... that the held-out images rate below the top one
    rated = {c["episode"]: c["select_reward"] for c in doc["candidates"]}
    assert rated[doc["episode"]] < rated[plain["episode"]] and "the most proposed of 2, kept" in captured.out
    assert "kept unless beaten there by more than 1000 images' worth" in captured.err
