"""The final pick's flags (``--pick``) of the run commands, and what they print of it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from haq.core.types import stderr_log as log

if TYPE_CHECKING:
    from haq.runs.final_pick import PickConfig
    from haq.runs.proposer import RunResult


def add_pick_args(p: argparse.ArgumentParser) -> None:
    """``--pick``, ``--select-samples``, ``--promote``, ``--pick-repeats``, ``--pick-defer``,
    ``--select-seeds`` and ``--report-seeds`` (the job document's ``pick`` section)."""
    from haq.runs.final_pick import PickConfig

    g = p.add_argument_group("final pick")
    g.add_argument(
        "--pick",
        type=int,
        default=PickConfig().k,
        help="re-score the run's top K policies on held-out images, choose the best there and report it on the test "
        "split (final_pick.json, final_policy.json); 0: no pick",
    )
    g.add_argument(
        "--select-samples",
        type=int,
        default=PickConfig().select_samples,
        help="validation images the pick re-scores on when that many follow the searched ones (else the test's first half)",
    )
    g.add_argument(
        "--promote",
        type=float,
        default=PickConfig().promote,
        help="multi-fidelity runs: first score in full the screened-out policies the final prediction rates best, "
        "until this fraction of the episodes was scored in full (0: none)",
    )
    g.add_argument(
        "--pick-repeats",
        type=int,
        default=PickConfig().repeats,
        help="also re-score the run's N most often proposed policies (each proposed at least twice) when not among "
        "the top K: the agent's settled choice; 0: the top K only",
    )
    g.add_argument(
        "--pick-defer",
        type=float,
        default=PickConfig().defer,
        help="keep the run's most often proposed policy unless another candidate beats it on the held-out images by "
        "more than this many images' worth of clean accuracy; 0: the best there",
    )
    g.add_argument(
        "--select-seeds",
        type=int,
        default=PickConfig().select_seeds,
        help="re-score the candidates on the held-out images under N evaluator seeds other than the one the search "
        "used (their mean decides), so a lucky fine-tune under the search's seed does not carry the pick; 0: the "
        "search's seed",
    )
    g.add_argument(
        "--report-seeds",
        type=int,
        default=PickConfig().report_seeds,
        help="evaluator seeds (fine-tune, calibration, attack) the chosen policy is reported under, the workload's own "
        "first; the test reward is their mean",
    )


def pick_config(ns: argparse.Namespace) -> PickConfig:
    """The job's ``pick`` section from the flags."""
    from haq.runs.final_pick import PickConfig

    return PickConfig(ns.pick, ns.select_samples, ns.promote, ns.report_seeds, ns.pick_repeats, ns.pick_defer, ns.select_seeds)


def report_pick(result: RunResult) -> None:
    """Print the run's final pick (nothing when the job made none)."""
    from haq.runs.final_pick import POLICY_FILE

    final = result.final
    if final is None:
        return
    pick, chosen = final.pick, final.chosen
    if final.promoted:
        log(f"final pick: {len(final.promoted)} screened-out episodes were scored in full first: {list(final.promoted)}")
    m = pick.test
    robust = f"{m.robust_acc:.4f}" if m.robust_acc is not None else "n/a"
    seeds = ""
    if len(pick.by_seed) > 1:
        each = ", ".join(f"{r.reward:+.4f}" for r in pick.by_seed)
        seeds = f" (mean over {len(pick.by_seed)} evaluator seeds: {each})"
    chosen_there = pick.select_rewards[pick.index]
    how = f"best of {len(pick.select_rewards)}"
    if pick.index == pick.settled and chosen_there < max(pick.select_rewards.values()):
        how = f"the most proposed of {len(pick.select_rewards)}, kept"
    print(
        f"final pick: episode {chosen.episode} (search reward {chosen.reward:+.4f}, {pick.select_images} "
        f"{chosen_there:+.4f}, {how}); on {pick.test_images}: "
        f"reward {pick.test_reward:+.4f}{seeds}, clean {m.clean_acc:.4f}, robust {robust} (the workload's seed)"
    )
    print(f"final policy: {result.run_dir / POLICY_FILE}")
