"""A finished run picks its final policy honestly: its top policies re-scored on held-out images
the search never saw, the best there reported on the test split and written beside the log."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from search_fakes import LinearEvaluator

from haq.cli import main
from haq.core.errors import ConfigError
from haq.evaluation.evaluators import CachedEvaluator
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.config import RewardConfig
from haq.problem.fidelity import FidelityScreen
from haq.problem.reward import image_reward
from haq.problem.select import top_distinct
from haq.quant import LayerBits, QuantPolicy
from haq.runs.final_pick import PICK_FILE, POLICY_FILE, PickConfig, judged, promoted
from haq.runs.rundir import EpisodeRecord, RunDir

SEARCH = ["search", "--evaluator", "cheap", "--episodes", "6", "--warmup", "2", "--seed", "0"]


def test_a_search_writes_its_pick_from_its_top_policies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*SEARCH, "--out", str(out), "--pick", "3", "--select-samples", "60"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    doc: dict[str, Any] = json.loads((out / PICK_FILE).read_text())
    assert (doc["format"], doc["version"]) == ("haq.final_pick", 4)
    assert doc["select_seeds"] == [0]  # chosen under the workload's own seed (the default)
    records = {r.episode: r for r in RunDir(out).read_episodes()}
    top: list[EpisodeRecord] = []
    for r in sorted(records.values(), key=lambda r: (-r.reward, r.episode)):  # the best 3 distinct policies
        if all(dict(r.policy) != dict(t.policy) for t in top) and len(top) < 3:
            top.append(r)
    assert [c["episode"] for c in doc["candidates"]] == [r.episode for r in top]
    best = max(doc["candidates"], key=lambda c: c["select_reward"])
    rated = {c["episode"]: c["select_reward"] for c in doc["candidates"]}
    settled = doc["settled_episode"]  # the run's most proposed (none here: 6 episodes, no repeat) ...
    kept = settled is not None and best["select_reward"] - rated[settled] <= 2 * image_reward(RewardConfig(), 180)
    assert doc["episode"] == (settled if kept else best["episode"])  # ... kept unless beaten by over 2 images' worth
    assert doc["search_reward"] == records[doc["episode"]].reward
    assert (doc["select_images"], doc["test_images"]) == ("test[0:180]", "test[180:360]")  # digits: val has too few left
    said = "re-scoring the top 3 policies, and the 2 most repeated not among them, on 180 held-out images (test[0:180])"
    assert said in captured.out + captured.err  # not the 60 asked
    assert -1.0 <= doc["test"]["clean_acc"] <= 1.0 and isinstance(doc["test_reward"], float)
    policy = QuantPolicy.load(out / POLICY_FILE)
    assert {n: (b.w_bits, b.a_bits) for n, b in policy.layers.items()} == dict(records[doc["episode"]].policy)
    assert policy.meta["final_pick"]["test_reward"] == doc["test_reward"]
    assert f"final pick: episode {doc['episode']}" in printed and str(out / POLICY_FILE) in printed
    # the cheap evaluator scores the same under any seed: reported under the workload's only
    [seed] = doc["test_seeds"]
    assert (seed["seed"], seed["reward"], seed["metrics"]) == (0, doc["test_reward"], doc["test"])
    assert policy.meta["final_pick"]["report_seeds"] == [0] and "evaluator seeds" not in printed


def test_a_full_evaluator_run_reports_the_mean_over_three_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    full = ["search", "--evaluator", "full", "--episodes", "3", "--warmup", "2", "--seed", "0"]
    assert main([*full, "--out", str(out), "--pick", "2"]) == 0
    printed = capsys.readouterr().out
    doc: dict[str, Any] = json.loads((out / PICK_FILE).read_text())
    seeds = doc["test_seeds"]
    assert [s["seed"] for s in seeds] == [0, 101, 102] == QuantPolicy.load(out / POLICY_FILE).meta["final_pick"]["report_seeds"]
    assert doc["test_reward"] == pytest.approx(sum(s["reward"] for s in seeds) / 3) and seeds[0]["metrics"] == doc["test"]
    assert "mean over 3 evaluator seeds" in printed
    assert main([*full, "--out", str(tmp_path / "one"), "--pick", "2", "--report-seeds", "1"]) == 0
    assert [s["seed"] for s in json.loads((tmp_path / "one" / PICK_FILE).read_text())["test_seeds"]] == [0]


def test_the_demo_makes_the_pick_and_shows_its_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert (
        main(["demo", "--evaluator", "cheap", "--episodes", "5", "--out", str(out), "--pick", "2", "--select-samples", "60"]) == 0
    )
    printed = capsys.readouterr().out
    doc = json.loads((out / PICK_FILE).read_text())
    assert len(doc["candidates"]) == 2 and (out / POLICY_FILE).is_file()
    assert f"final pick: episode {doc['episode']}" in printed and f"| final pick (episode {doc['episode']}) |" in printed


def test_no_pick_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main([*SEARCH, "--episodes", "3", "--out", str(out), "--pick", "0"]) == 0
    assert not (out / PICK_FILE).exists() and not (out / POLICY_FILE).exists()


def test_a_bad_pick_setting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^k must be an integer >= 0, got -1$"):
        PickConfig(k=-1)
    with pytest.raises(ConfigError, match="select_samples"):
        PickConfig(select_samples=0)
    assert main([*SEARCH, "--episodes", "1", "--out", str(tmp_path / "r"), "--pick", "-1"]) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("haq: ")] == ["haq: error: k must be an integer >= 0, got -1"]


def _record(episode: int, reward: float, fidelity: str | None) -> EpisodeRecord:
    metrics = PolicyMetrics(0.9, None, 1.0, None, 64, 0.1)
    return EpisodeRecord(episode, {"fc": (8, 8)}, metrics, reward, {} if fidelity is None else {"fidelity": fidelity})


def test_only_episodes_the_judge_scored_are_candidates() -> None:
    """A screened-out episode's reward is a prediction: never a candidate of a multi-fidelity run."""
    records = [_record(0, 0.5, "full"), _record(1, 0.9, "screen"), _record(2, 0.4, None), _record(3, 0.8, "cheap")]
    screened: Any = SimpleNamespace(screen=object())
    assert [r.episode for r in judged(records, screened)] == [0, 2]
    assert [r.episode for r in judged(records, SimpleNamespace(screen=None))] == [0, 1, 2, 3]  # type: ignore[arg-type]


def test_a_multi_fidelity_pick_promotes_the_best_predicted_screened_episodes_first() -> None:
    """Up to a third of the episodes scored in full: what the run left of that goes to the
    screened-out episodes the final prediction rates best, and they become candidates."""
    screen = FidelityScreen(
        CachedEvaluator(LinearEvaluator(0.1, 0.0)),
        CachedEvaluator(LinearEvaluator(0.1, 0.2)),
        lambda m, r: m.clean_acc - r.clean_acc,
        2,
        0.0,
        0.0,
    )
    bits = [7, 8, 2, 5, 3, 6, 4, 2, 3]
    policies = [QuantPolicy({"a": LayerBits(b, b)}) for b in bits]
    scored = screen.score_many(policies[:2]) + screen.score_many(policies[2:])  # calibrated on 7 and 8 bits first
    records = [
        EpisodeRecord(i, {"a": (b, b)}, s.metrics, s.reward, s.annotations()) for i, (b, s) in enumerate(zip(bits, scored))
    ]
    assert screen.full_evaluations == 2 and [r.extra["fidelity"] for r in records[2:]] == ["cheap"] * 7
    extra = promoted(records, SimpleNamespace(screen=screen), 1 / 3)  # type: ignore[arg-type]
    assert [r.episode for r in extra] == [5] and screen.full_evaluations == 3  # 9 / 3 = 3 in full
    assert extra[0].extra["fidelity"] == "full" and extra[0].extra["promoted"] is True
    assert extra[0].reward == pytest.approx(0.2 + 0.6 - 1.0) and extra[0].metrics.clean_acc == pytest.approx(0.8)
    assert promoted(records, SimpleNamespace(screen=screen), 1 / 3) == []  # the allowance is spent  # type: ignore[arg-type]


def test_the_pick_is_part_of_the_job_document(tmp_path: Path) -> None:
    """A job file's ``[pick]`` section drives the pick (as the service runs it) and the stored
    ``job.toml`` of the run carries it, so the run can be submitted again as it was."""
    job = tmp_path / "job.toml"
    job.write_text(
        'version = 1\nkind = "search"\n[search]\nepisodes = 4\n[search.env.evaluation]\nkind = "cheap"\n'
        "[search.agent]\nwarmup_episodes = 2\n[pick]\nk = 2\n"
    )
    out = tmp_path / "run"
    assert main(["search", "--config", str(job), "--out", str(out)]) == 0
    assert len(json.loads((out / PICK_FILE).read_text())["candidates"]) == 2
    assert "[pick]" in (out / "job.toml").read_text() and "k = 2" in (out / "job.toml").read_text()
    assert main(["search", "--config", str(job), "--out", str(tmp_path / "none"), "--pick", "0"]) == 0
    assert not (tmp_path / "none" / PICK_FILE).exists()


@given(st.lists(st.tuples(st.integers(2, 4), st.sampled_from([-0.5, -0.25, 0.0, 0.25])), max_size=12), st.integers(1, 6))
def test_the_top_candidates_are_the_best_distinct_policies_best_first(rows: list[tuple[int, float]], k: int) -> None:
    candidates = [(QuantPolicy.uniform(["a"], bits), reward) for bits, reward in rows]
    top = top_distinct(candidates, k)
    bits = [candidates[i][0]["a"].w_bits for i in top]
    assert len(bits) == len(set(bits)) == min(k, len({b for b, _ in rows}))
    assert [candidates[i][1] for i in top] == sorted((candidates[i][1] for i in top), reverse=True)
    for i in top:  # each is its policy's best-rewarded (then earliest) episode
        same = [j for j, (b, _) in enumerate(rows) if b == rows[i][0]]
        assert i == min(same, key=lambda j: (-rows[j][1], j))
    left_out = {b for b, _ in rows} - set(bits)
    if left_out:  # nothing left out beats the last one kept
        best_left = max(r for b, r in rows if b in left_out)
        assert best_left <= candidates[top[-1]][1]
