"""Judge a search-quality benchmark's runs with less of the evaluator's own luck in the verdict.

The full evaluator fine-tunes each policy (Defensive Quantization), calibrates and attacks with
the workload's seed, so one policy's test reward is one draw of that randomness as well as of the
test images: re-scored under other seeds it moves by 0.13 (digits CNN) to 0.38 (digits MLP) in
reward std. A deterministic baseline (greedy, ILP, uniform) runs once, so its figure holds a single
such draw however many seeds the agent runs, and a gap of 0.1 between an agent's median and a
baseline's can be that draw alone.

This script makes each finished run's final pick again (deterministic: the benchmark's own pick,
both folds: choose on one half of the test split, report on the other; a multi-fidelity run first
replays its log into its screen and promotes as the benchmark did) and re-scores each fold's
chosen policy on its report images under ``--evaluator-seeds`` seeds:
the workload's own (which reproduces the benchmark's figure; a run that does not is named) and
101, 102, ... (:func:`haq.problem.select.report_seeds`, the seeds ``haq``'s own pick reports
under). The mean over seeds replaces the run's test reward, clean and robust accuracy (first
fold) and its cross-fitted reward (the mean of both folds' means); the choice itself is
untouched, so nothing chosen is re-judged on images that chose it.

Rows are written as the benchmark writes them, to ``--out``'s results.json, one at a time, and a
rerun skips the runs already there, so ``search_quality.py --merge OUT`` prints every table and
verdict under this judge:

    python bench/rejudge.py SQ [SQ2 ...] --out SQ-judged --evaluator-seeds 5
    python bench/rejudge.py OLD --methods rl random --out SQ-judged   # add runs from another --out
    python bench/search_quality.py --merge SQ-judged
    python bench/rejudge.py SQ --pick-repeats 2 --out SQ-repeats   # the pick that also re-scores repeats
    python bench/rejudge.py SQ --pick-repeats 2 --pick-defer 2 --out SQ-defer   # ... keeping the most proposed
    python bench/rejudge.py SQ --pick-repeats 2 --pick-defer 2 --pick-select-seeds 1 --out SQ-fresh   # ... chosen elsewhere
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Sequence

import torch
from search_quality import (
    INVOCATION,
    RESULTS,
    RunKey,
    RunResult,
    Workbench,
    by_workbench,
    crossfit_reward,
    log,
    method_env,
    method_pick,
    read_results,
    run_dir,
    run_key,
    to_json,
    workbench_setting,
)

from haq.core.fileio import atomic_write_text
from haq.evaluation.evaluators import policy_key
from haq.runs.final_pick import FinalPick, pick_run, with_asked
from haq.runs.replay import replay
from haq.runs.rundir import EpisodeRecord, RunDir

REPRODUCED = 1e-9
"""How far the own seed's score may sit from the benchmark's figure and still reproduce it."""


def rejudged(
    bench: Workbench, root: Path, r: RunResult, seeds: int, repeats: int = 0, defer: float = 0.0, select_seeds: int = 0
) -> RunResult:
    """``r`` with its test reward, accuracies and cross-fitted reward replaced by the means over
    ``seeds`` evaluator seeds: the pick made as the benchmark made it (with ``repeats``, also
    re-scoring the run's most repeated proposals: ``PickConfig.repeats``; with ``defer``, keeping
    the most proposed unless beaten: ``PickConfig.defer``; with ``select_seeds``, choosing under
    other evaluator seeds: ``PickConfig.select_seeds``), reported as ``haq``'s own pick reports
    (:func:`haq.problem.select.pick_final` with ``seeds``)."""
    problem = bench.problem(method_env(bench.env, r.method))
    records = RunDir(run_dir(root, r.model, r.method, r.seed)).read_episodes()
    replay(problem, records)  # a multi-fidelity run's screen as the run left it, for its promotion
    pick = dataclasses.replace(method_pick(r.method, seeds, repeats, defer), select_seeds=select_seeds)
    final = pick_run(problem, records, pick)
    log(f"  {choice(final, records)}")
    first = final.pick
    own = first.by_seed[0].reward
    if repeats == 0 and defer == 0 and select_seeds == 0 and abs(own - r.test_reward) > REPRODUCED:
        log(f"  {r.model} {r.method} seed {r.seed}: the pick scores {own:+.4f}, the benchmark wrote {r.test_reward:+.4f}")
    crossfit = crossfit_reward(problem, final, pick)
    metrics = [s.metrics for s in first.by_seed]
    robust = [m.robust_acc for m in metrics]
    return dataclasses.replace(
        r,
        test_reward=first.test_reward,
        test_clean=statistics.mean(m.clean_acc for m in metrics),
        test_robust=r.test_robust if None in robust else statistics.mean(a for a in robust if a is not None),
        crossfit_reward=crossfit,
        full_evaluations=None if problem.screen is None else problem.screen.full_evaluations,
    )  # a cheap evaluator's rows carry a robust accuracy measured apart, kept


def choice(final: FinalPick, records: Sequence[EpisodeRecord]) -> str:
    """What the pick chose, in words: the episode, how often the run proposed its policy, and how
    it stood to the run's most proposed policy on the choosing images (with deferral)."""
    chosen, pick = final.chosen, final.pick
    key = policy_key(chosen.quant_policy())
    proposed = sum(policy_key(r.quant_policy()) == key for r in with_asked(records))  # a replaced proposal asked for it too
    said = f"chose episode {chosen.episode} (proposed {proposed} times)"
    if pick.settled is None:
        return said
    if pick.settled == pick.index:
        return f"{said}: the run's most proposed policy"
    margin = pick.select_rewards[pick.index] - pick.select_rewards[pick.settled]
    settled = final.candidates[pick.settled].episode
    return f"{said} over the most proposed (episode {settled}), {margin:+.3f} ahead on the choosing images"


def measure(
    roots: Sequence[Path],
    out: Path,
    seeds: int,
    methods: Sequence[str],
    models: Sequence[str],
    workers: int,
    repeats: int = 0,
    defer: float = 0.0,
    select_seeds: int = 0,
) -> None:
    """Re-judge every run of ``roots`` (of ``methods`` / ``models`` when given)
    not yet in ``out``, writing each row as it is made."""
    path = out / RESULTS
    rows = read_results(path) if path.exists() else []
    done: set[RunKey] = {run_key(r) for r in rows}
    todo: list[tuple[Path, RunResult]] = []
    for root in roots:
        if not (root / RESULTS).is_file():
            raise SystemExit(f"{root} holds no {RESULTS}; give bench/search_quality.py --out directories")
        for r in read_results(root / RESULTS):
            wanted = (not methods or r.method in methods) and (not models or r.model in models)
            if wanted and run_key(r) not in done:
                where = run_dir(root, r.model, r.method, r.seed)
                if not where.is_dir():
                    raise SystemExit(f"{where}: no run directory for this row of {root / RESULTS}")
                todo.append((root, r))
                done.add(run_key(r))
    out.mkdir(parents=True, exist_ok=True)
    invocation = {
        "format": "haq.bench.rejudge",
        "version": 3,
        "seeds": seeds,
        "repeats": repeats,
        "defer": defer,
        "select_seeds": select_seeds,
    }
    atomic_write_text(out / INVOCATION, json.dumps(invocation) + "\n")
    for key, group in by_workbench(todo).items():
        bench = Workbench(workbench_setting(key), workers)  # at the rate the runs used
        try:
            for root, r in group:
                log(f"{r.model} {r.method} seed {r.seed} ({root})")
                new = rejudged(bench, root, r, seeds, repeats, defer, select_seeds)
                rows.append(new)
                atomic_write_text(path, json.dumps([to_json(x) for x in rows], indent=2) + "\n")
                log(f"  test reward {r.test_reward:+.4f} -> {new.test_reward:+.4f} over {seeds} evaluator seeds")
        finally:
            bench.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("runs", nargs="+", type=Path, help="bench/search_quality.py --out directories")
    p.add_argument("--out", type=Path, required=True, help="where the re-judged results.json goes (resumed)")
    p.add_argument("--evaluator-seeds", type=int, default=5, help="evaluator seeds per report (the workload's own first)")
    p.add_argument("--methods", nargs="+", default=(), help="re-judge only these methods' runs")
    p.add_argument("--models", nargs="+", default=(), help="re-judge only these models' runs")
    p.add_argument("--workers", type=int, default=1, help="evaluation workers for the picks (Ray)")
    p.add_argument(
        "--pick-repeats",
        type=int,
        default=0,
        help="make the pick also re-score each run's N most repeated proposals (haq's PickConfig.repeats); "
        "0: the benchmark's own pick",
    )
    p.add_argument(
        "--pick-defer",
        type=float,
        default=0.0,
        help="make the pick keep each run's most proposed policy unless beaten by more than D images' worth "
        "(haq's PickConfig.defer); 0: the best on the choosing half",
    )
    p.add_argument(
        "--pick-select-seeds",
        type=int,
        default=0,
        help="make the pick choose by the mean over N evaluator seeds the search did not use (haq's "
        "PickConfig.select_seeds); 0: the workload's own",
    )
    ns = p.parse_args(argv)
    if ns.evaluator_seeds < 1:
        p.error(f"--evaluator-seeds must be >= 1, got {ns.evaluator_seeds}")
    if ns.pick_repeats < 0:
        p.error(f"--pick-repeats must be >= 0, got {ns.pick_repeats}")
    if ns.pick_defer < 0:
        p.error(f"--pick-defer must be >= 0, got {ns.pick_defer}")
    if ns.pick_select_seeds < 0:
        p.error(f"--pick-select-seeds must be >= 0, got {ns.pick_select_seeds}")
    torch.set_num_threads(1)
    measure(
        ns.runs,
        ns.out,
        ns.evaluator_seeds,
        ns.methods,
        ns.models,
        ns.workers,
        ns.pick_repeats,
        ns.pick_defer,
        ns.pick_select_seeds,
    )
    print(f"re-judged rows in {ns.out / RESULTS}; tables: python bench/search_quality.py --merge {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
