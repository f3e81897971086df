"""The final pick also re-scores the run's most repeated proposals: which those are, that they
join the top ``k`` without displacing it, a replaced proposal counts as the policy it asked for,
and the setting's validation and flag."""

from __future__ import annotations

import pytest

from haq.cli import main as haq_main
from haq.core.errors import ConfigError
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.select import most_repeated, pick_candidates
from haq.quant import QuantPolicy
from haq.runs.final_pick import ASKED, PickConfig, with_asked
from haq.runs.rundir import EpisodeRecord


def _policy(w: int) -> QuantPolicy:
    return QuantPolicy.from_pairs([("conv1", (w, 8)), ("fc", (8, 8))])


def test_the_most_repeated_come_first_by_count_then_by_first_proposal() -> None:
    log = [_policy(w) for w in (2, 3, 4, 3, 5, 4, 3, 6, 4, 5)]  # 3 and 4 three times, 5 twice, 2 and 6 once
    assert most_repeated(log, 2) == [1, 2]  # 3 (first at 1) before 4 (first at 2): a tie goes to the earlier
    assert most_repeated(log, 5) == [1, 2, 4]  # a policy proposed once is not a repeat
    assert most_repeated(log, 0) == [] and most_repeated([_policy(2)], 2) == []


def test_a_repeat_is_the_same_policy_whatever_the_layer_order() -> None:
    a = QuantPolicy.from_pairs([("conv1", (4, 8)), ("fc", (2, 8))])
    b = QuantPolicy.from_pairs([("fc", (2, 8)), ("conv1", (4, 8))])
    assert most_repeated([_policy(2), a, b], 1) == [1]


def test_repeats_join_the_top_k_without_displacing_it() -> None:
    rewards = {2: 0.9, 3: 0.1, 4: 0.8, 5: 0.2, 6: 0.7, 7: 0.3}
    log = [(_policy(w), rewards[w]) for w in (2, 3, 3, 3, 4, 5, 5, 6, 7, 2, 2)]
    assert pick_candidates(log, 3) == [0, 4, 7]  # 2, 4, 6 by search reward
    # the most repeated are 2 (three times, already a candidate) and 3 (three times): 3 joins
    assert pick_candidates(log, 3, 2) == [0, 4, 7, 1]
    assert pick_candidates(log, 3, 3) == [0, 4, 7, 1, 5]  # then 5 (twice)
    assert pick_candidates(log, 6, 3) == pick_candidates(log, 6)  # every repeat already among the top 6


def test_the_setting_is_validated_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="repeats"):
        PickConfig(repeats=-1)
    assert haq_main(["search", "--pick-repeats", "-1", "--episodes", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("haq: ")]
    assert len(err) == 1 and "repeats" in err[0], err


def _episode(episode: int, w: int, reward: float, asked: object = None) -> EpisodeRecord:
    extra = {} if asked is None else {ASKED: asked}
    return EpisodeRecord(episode, {"conv1": (w, 8), "fc": (8, 8)}, PolicyMetrics(0.9, None, 1.0, None, 64, 0.1), reward, extra)


def test_a_replaced_proposal_counts_as_the_policy_it_asked_for() -> None:
    """An agent whose repeats are replaced asks for its favourite as often as one whose repeats are
    logged: the pick's most proposed policy is that favourite, at its first record's reward."""
    favourite = {"conv1": [3, 8], "fc": [8, 8]}
    records = [
        _episode(0, 2, 0.9),
        _episode(1, 3, 0.1),
        _episode(2, 4, 0.8, asked=favourite),
        _episode(3, 5, 0.2, asked=favourite),
        _episode(4, 6, 0.7, asked={"conv1": [7, 8], "fc": [8, 8]}),  # asked for a policy no record holds
        _episode(5, 7, 0.3, asked={"conv1": "x"}),  # not a policy: counts as nothing
    ]
    expanded = with_asked(records)
    assert [r.episode for r in expanded] == [0, 1, 2, 1, 3, 1, 4, 5]
    candidates = [(r.quant_policy(), r.reward) for r in expanded]
    assert [expanded[i].episode for i in most_repeated([c[0] for c in candidates], 1)] == [1]
    assert [expanded[i].episode for i in pick_candidates(candidates, 3, 2)] == [0, 2, 4, 1]
    assert most_repeated([r.quant_policy() for r in records], 1) == []  # without them: no repeat at all
