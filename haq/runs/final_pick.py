"""The final pick of a finished run, written beside its log.

A run's best episode won on the few hundred images the search scored, and among hundreds of
noisy rewards the highest is partly luck. :func:`haq.problem.select.pick_final` re-scores the
run's top ``k`` distinct policies on held-out images the search never saw, chooses the best
there and reports it on the test split; this module runs it on a run directory's log and
writes what it chose:

    RUN_DIR/final_pick.json     haq.final_pick version 3: the chosen episode, every candidate's
                                search and selection reward, the chosen policy's test metrics (the
                                workload's evaluator seed) and reward (the mean over the report's
                                seeds), its report under each seed, which images each stage used,
                                and the episode of the most proposed policy a deferring pick kept
                                to (``settled_episode``, null without ``defer``; version 2 had no
                                such field, version 1 no report seeds: one, the workload's), and
                                the evaluator seeds the selection images were scored under
                                (``select_seeds``; version 3 had none: the workload's)
    RUN_DIR/final_policy.json   the chosen policy (a haq.policy file; its meta carries the run's
                                export_weights, as best_policy.json's does)

Candidates are the episodes the run's judge scored: in a multi-fidelity run a screened-out
episode's reward is a prediction, not a measurement. A multi-fidelity run first spends what is
left of its full-evaluation allowance (``PickConfig.promote`` of the episodes) on the
screened-out policies its final prediction rates best; those join the candidates. Writing is
atomic and the pick is deterministic (seeded evaluators), so a pick a kill interrupted is simply
made again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from haq.core.errors import ConfigError
from haq.core.fileio import atomic_write_text
from haq.core.validate import count, finite
from haq.evaluation.evaluators import PolicyKey, pairs_key
from haq.problem.fidelity import FULL
from haq.problem.problem import SearchProblem
from haq.problem.select import Pick, pick_final
from haq.quant import QuantPolicy
from haq.runs.rundir import EpisodeRecord, RunDir, policy_from_json, with_weights

PICK_FILE = "final_pick.json"
POLICY_FILE = "final_policy.json"
PICK_FORMAT = "haq.final_pick"
PICK_VERSION = 4
ASKED = "asked"
"""The episode annotation of the policy a replaced proposal first asked for, ``{layer: [w, a]}``
(:mod:`haq.search.redraw`): the repeat it replaced, which the pick counts (:func:`with_asked`)."""


@dataclass(frozen=True)
class PickConfig:
    """How a finished run picks its final policy.

    k: distinct top policies re-scored on the selection images (0: no pick).
    select_samples: selection images: validation images after the searched ones when that many
        are left, otherwise the first half of the test split (whatever its size).
    promote: multi-fidelity runs: before the pick, full evaluations (on the search images) for
        the screened-out policies the final prediction rates best, until this fraction of the
        episodes has been scored in full; they become candidates like any (0: none).
    repeats: the run's most often proposed policies (each proposed at least twice) re-scored
        beside the top ``k`` when not among them (:func:`haq.problem.select.pick_candidates`).
        2 since 2026-12-06, by a rule written before it was measured (``bench/pick_rules.py
        --rank repeated``, the default agent's runs of seeds 20-29, cross-fitted): +0.055 on the
        digits CNN (6 runs better, 3 worse), no run changed on the MLP; under the mean of 10
        evaluator seeds (``bench/rejudge.py --pick-repeats 2``) +0.045 on the CNN (3 better, 0
        worse). Seeds 10-19, read after: CNN +0.012 (3 and 3), MLP -0.017 (0 and 1).
    defer: images' worth of clean accuracy on the selection images by which the best candidate must
        beat the run's most often proposed policy to be chosen over it (:func:`haq.problem.select.deferring`);
        0: the best there, always. 2 since 2026-12-06, by a rule written before it was measured
        (``bench/pick_rules.py --rank repeated --defer 2``, the default agent's runs of seeds 20-29,
        cross-fitted, against the pick among the same candidates): digits CNN +0.001 (4 runs
        better, 3 worse), no run changed on the MLP; under the mean of 10 evaluator seeds
        (``bench/rejudge.py --pick-defer 2``) CNN +0.064 (4 better, none worse), cross-fitted
        +0.039 (6 and 1). Read after: seeds 10-19 CNN +0.060 (6 and 1; under 10 seeds +0.044, 4
        and 1), MLP unchanged; ResNet-20 -0.024 (3 runs of 3 worse), MobileNetV2 unchanged.
    select_seeds: evaluator seeds other than the workload's (201, 202, ...) the candidates are
        re-scored under on the selection images, compared by their mean; 0: the workload's own,
        the seed the search scored under, so a fine-tune lucky under it stays lucky there
        (:func:`haq.problem.select.choosing_seeds`). Each costs the pick's re-score once more.
        0 by a rule written before it was measured: one other seed against the own seed on the
        digits models' unseen seeds 50-59 (rl and rl-multi, haq's pick, 10-seed judge) -0.071
        (11 runs better, 23 worse; CNN -0.065, MLP -0.076; ``bench/rejudge.py --pick-select-seeds 1``).
    report_seeds: evaluator seeds the chosen policy is reported under, the workload's own first;
        the test reward is their mean (:mod:`haq.problem.select`: the search's seed flatters the
        policy it chose). Each costs one evaluation; a run judged by the cheap evaluator, which
        gives the same score under any seed, reports under its own only.
    """

    k: int = 5
    select_samples: int = 150
    promote: float = 1 / 3
    report_seeds: int = 3
    repeats: int = 2
    defer: float = 2.0
    select_seeds: int = 0

    def __post_init__(self) -> None:
        count("k", self.k, 0)
        count("select_samples", self.select_samples)
        finite("promote", self.promote, 0.0, 1.0)
        count("report_seeds", self.report_seeds)
        count("repeats", self.repeats, 0)
        finite("defer", self.defer, 0.0)
        count("select_seeds", self.select_seeds, 0)


@dataclass(frozen=True)
class FinalPick:
    """What :func:`pick_run` chose, among which candidates (a promoted episode carries the reward
    of its full evaluation), and which episodes it promoted."""

    pick: Pick
    candidates: tuple[EpisodeRecord, ...]
    promoted: tuple[int, ...] = ()

    @property
    def chosen(self) -> EpisodeRecord:
        """The chosen episode."""
        return self.candidates[self.pick.index]


def judged(records: Sequence[EpisodeRecord], problem: SearchProblem) -> list[EpisodeRecord]:
    """The episodes whose reward the run's judge measured (all of them without a screen)."""
    if problem.screen is None:
        return list(records)
    return [r for r in records if r.extra.get("fidelity", FULL) == FULL]


def promoted(records: Sequence[EpisodeRecord], problem: SearchProblem, fraction: float) -> list[EpisodeRecord]:
    """The screened-out episodes a multi-fidelity run's screen promotes to a full evaluation
    (:meth:`haq.problem.fidelity.FidelityScreen.promote`), each with its full metrics and reward."""
    screen = problem.screen
    if screen is None:
        return []
    allowance = math.floor(fraction * len(records) + 1e-9) - screen.full_evaluations
    rest = [r for r in records if r.extra.get("fidelity", FULL) != FULL and "cheap_reward" in r.extra]
    if allowance <= 0 or not rest:
        return []
    scored = screen.promote([r.quant_policy() for r in rest], [float(r.extra["cheap_reward"]) for r in rest], allowance)
    return [
        replace(rest[i], metrics=s.metrics, reward=s.reward, extra={**rest[i].extra, **s.annotations(), "promoted": True})
        for i, s in scored
    ]


def with_asked(records: Sequence[EpisodeRecord]) -> list[EpisodeRecord]:
    """``records`` with, after each episode that replaced a repeating proposal, the first record of
    the policy it asked for, as the repeat would have been logged (a cache hit with that record's
    reward). Why: the pick's most proposed policy (``PickConfig.repeats`` and ``defer``) is what
    the agent kept asking for; an agent whose repeats are replaced (``AgentConfig.redraws``) asks
    for its favourite as often as before but leaves no repeat in the log: on the digits CNN the
    pick kept the most proposed policy in 1 run of 10 with repeats replaced by the objective's
    next-best, 7 of 10 without. An asked policy that no record here holds (screened out) adds
    nothing."""
    first: dict[PolicyKey, EpisodeRecord] = {}
    out: list[EpisodeRecord] = []
    for r in records:
        first.setdefault(pairs_key(r.policy.items()), r)
        out.append(r)
        asked = r.extra.get(ASKED)
        if isinstance(asked, dict):
            try:
                key = pairs_key(policy_from_json(asked).items())
            except (TypeError, ValueError, IndexError, KeyError):
                continue  # not a policy: counted as nothing, as a record without the annotation
            if key in first:
                out.append(first[key])
    return out


def pick_run(problem: SearchProblem, records: Sequence[EpisodeRecord], cfg: PickConfig) -> FinalPick:
    """Promote (multi-fidelity runs, ``cfg.promote``), then pick among the run's judged episodes
    (each replaced proposal's asked-for policy counted as proposed again, :func:`with_asked`)."""
    extra = promoted(records, problem, cfg.promote)
    candidates = (*with_asked(judged(records, problem)), *extra)
    if not candidates:
        raise ConfigError("the run has no episode scored in full to pick from; run more episodes")
    pick = pick_final(
        problem,
        [(r.quant_policy(), r.reward) for r in candidates],
        cfg.k,
        cfg.select_samples,
        seeds=cfg.report_seeds,
        repeats=cfg.repeats,
        defer=cfg.defer,
        select_seeds=cfg.select_seeds,
    )
    return FinalPick(pick, candidates, tuple(r.episode for r in extra))


def write_pick(run_dir: Path, final: FinalPick) -> Path:
    """``final_pick.json`` and ``final_policy.json`` in ``run_dir``; returns the first."""
    pick, chosen = final.pick, final.chosen
    doc: dict[str, Any] = {
        "format": PICK_FORMAT,
        "version": PICK_VERSION,
        "episode": chosen.episode,
        "search_reward": chosen.reward,
        "select_images": pick.select_images,
        "select_seeds": list(pick.select_seeds),
        "test_images": pick.test_images,
        "promoted": list(final.promoted),
        "settled_episode": None if pick.settled is None else final.candidates[pick.settled].episode,
        "candidates": [
            {"episode": final.candidates[i].episode, "search_reward": final.candidates[i].reward, "select_reward": reward}
            for i, reward in pick.select_rewards.items()
        ],
        "test_reward": pick.test_reward,
        "test": pick.test.to_dict(),
        "test_seeds": [{"seed": r.seed, "reward": r.reward, "metrics": r.metrics.to_dict()} for r in pick.by_seed],
    }
    picked = {
        "select_images": pick.select_images,
        "test_images": pick.test_images,
        "test_reward": pick.test_reward,
        "report_seeds": [r.seed for r in pick.by_seed],
    }
    final_policy = QuantPolicy(pick.policy.layers, {**pick.policy.meta, "final_pick": picked})
    with_weights(final_policy, RunDir(run_dir).export_weights()).save(run_dir / POLICY_FILE)
    path = run_dir / PICK_FILE
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


__all__ = ["ASKED", "PICK_FILE", "POLICY_FILE", "FinalPick", "PickConfig", "judged", "pick_run", "promoted", "with_asked", "write_pick"]
