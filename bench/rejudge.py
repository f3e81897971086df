"""Judge a search-quality benchmark's runs with less of the evaluator's own luck in the verdict.

The full evaluator fine-tunes each policy (Defensive Quantization), calibrates and attacks with
the workload's seed, so one policy's test reward is one draw of that randomness as well as of the
test images: re-scored under other seeds it moves by 0.13 (digits CNN) to 0.38 (digits MLP) in
reward std. A deterministic baseline (greedy, ILP, uniform) runs once, so its figure holds a single
such draw however many seeds the agent runs, and a gap of 0.1 between an agent's median and a
baseline's can be that draw alone.

This script makes each finished single-fidelity run's final pick again (deterministic: the
benchmark's own pick, both folds: choose on one half of the test split, report on the other)
and re-scores each fold's chosen policy on its report images under ``--evaluator-seeds`` seeds:
the workload's own (which reproduces the benchmark's figure; a run that does not is named) and
101, 102, ... (:func:`haq.problem.select.report_seeds`, the seeds ``haq``'s own pick reports
under). The mean over seeds replaces the run's test reward, clean and robust accuracy (first
fold) and its cross-fitted reward (the mean of both folds' means); the choice itself is
untouched, so nothing chosen is re-judged on images that chose it. Multi-fidelity runs are
skipped (their pick promotes policies the log does not score).

Rows are written as the benchmark writes them, to ``--out``'s results.json, one at a time, and a
rerun skips the runs already there, so ``search_quality.py --merge OUT`` prints every table and
verdict under this judge:

    python bench/rejudge.py SQ [SQ2 ...] --out SQ-judged --evaluator-seeds 5
    python bench/rejudge.py OLD --methods rl random --out SQ-judged   # add runs from another --out
    python bench/search_quality.py --merge SQ-judged
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from search_quality import (
    INVOCATION,
    PICK_K,
    REPORT_SEEDS,
    RESULTS,
    RunKey,
    RunResult,
    Setting,
    Workbench,
    log,
    method_env,
    read_results,
    run_dir,
    run_key,
    to_json,
)

from haq.core.fileio import atomic_write_text
from haq.evaluation.evaluators import PolicyKey, QuantizingEvaluator, policy_key
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.fidelity import FULL
from haq.problem.problem import MULTI
from haq.problem.select import pick_final, pick_images, report_seeds, swapped_images
from haq.quant import QuantPolicy
from haq.runs.final_pick import PickConfig, pick_run
from haq.runs.rundir import RunDir


@dataclass(frozen=True)
class Judged:
    """One policy on one set of report images: the means over the evaluator seeds (reward, clean
    and robust accuracy; robust ``None`` where the evaluator does not attack) and the own seed's reward."""

    reward: float
    own: float
    clean: float
    robust: float | None


REPRODUCED = 1e-9
"""How far the own seed's score may sit from the benchmark's figure and still reproduce it."""


class SeededJudge:
    """One setting's evaluators per (evaluator seed, report images), built once and shared by
    every run, with each policy's reward kept (a policy two runs chose is scored once)."""

    def __init__(self, bench: Workbench, kind: str, seeds: tuple[int, ...]) -> None:
        self.bench, self.kind, self.seeds = bench, kind, seeds
        self.problem = bench.problem(bench.env)  # its reward: the same for every method of the setting
        self._evaluators: dict[tuple[int, Images], QuantizingEvaluator] = {}
        self._scored: dict[tuple[int, Images, PolicyKey], tuple[float, PolicyMetrics]] = {}

    def score(self, policy: QuantPolicy, images: Images, seed: int) -> tuple[float, PolicyMetrics]:
        """``policy``'s reward and metrics on ``images`` with the evaluator seeded ``seed``."""
        key = (seed, images, policy_key(policy))
        if key not in self._scored:
            ev = self._evaluators.get((seed, images))
            if ev is None:
                bench = self.bench
                ev = held_out_evaluator(bench.workload, bench.table, bench.env.evaluation, self.kind, images, seed)
                self._evaluators[(seed, images)] = ev
            metrics = ev.evaluate(policy)
            self._scored[key] = self.problem.reward(metrics, ev.reference), metrics
        return self._scored[key]

    def mean(self, policy: QuantPolicy, images: Images) -> Judged:
        """``policy`` on ``images``: means over the seeds, and the own seed's reward."""
        scored = [self.score(policy, images, s) for s in self.seeds]
        robust = [m.robust_acc for _, m in scored]
        return Judged(
            statistics.mean(r for r, _ in scored),
            scored[0][0],
            statistics.mean(m.clean_acc for _, m in scored),
            None if None in robust else statistics.mean(r for r in robust if r is not None),
        )


def rejudged(bench: Workbench, judge: SeededJudge, root: Path, r: RunResult) -> RunResult:
    """``r`` with its test reward, accuracies and cross-fitted reward replaced by the means over the
    judge's seeds (the pick made as the benchmark made it)."""
    problem = bench.problem(method_env(bench.env, r.method))
    records = RunDir(run_dir(root, r.model, r.method, r.seed)).read_episodes()
    final = pick_run(problem, records, PickConfig(k=PICK_K, promote=0.0, report_seeds=REPORT_SEEDS))
    first = judge.mean(final.pick.policy, pick_images(problem, PickConfig().select_samples)[1])
    if abs(first.own - r.test_reward) > REPRODUCED:
        log(f"  {r.model} {r.method} seed {r.seed}: the pick scores {first.own:+.4f}, the benchmark wrote {r.test_reward:+.4f}")
    crossfit = None
    other = swapped_images(problem, PickConfig().select_samples)
    if other is not None:
        swapped = pick_final(problem, [(e.quant_policy(), e.reward) for e in final.candidates], PICK_K, images=other)
        crossfit = (first.reward + judge.mean(swapped.policy, other[1]).reward) / 2
    robust = r.test_robust if first.robust is None else first.robust  # a cheap evaluator's rows carry a separate measurement
    return dataclasses.replace(r, test_reward=first.reward, test_clean=first.clean, test_robust=robust, crossfit_reward=crossfit)


def measure(roots: Sequence[Path], out: Path, seeds: int, methods: Sequence[str], models: Sequence[str], workers: int) -> None:
    """Re-judge every single-fidelity run of ``roots`` (of ``methods`` / ``models`` when given)
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
            if wanted and r.full_evaluations is None and run_key(r) not in done:
                where = run_dir(root, r.model, r.method, r.seed)
                if not where.is_dir():
                    raise SystemExit(f"{where}: no run directory for this row of {root / RESULTS}")
                todo.append((root, r))
                done.add(run_key(r))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / INVOCATION, json.dumps({"format": "haq.bench.rejudge", "version": 1, "seeds": seeds}) + "\n")
    for key in dict.fromkeys((r.model, r.evaluator, r.val_samples) for _, r in todo):
        bench = Workbench(Setting(key[0], key[1], 0, (), key[2]), workers)
        try:
            kind = FULL if bench.env.evaluation.kind == MULTI else bench.env.evaluation.kind
            judge = SeededJudge(bench, kind, report_seeds(bench.workload.config.seed, seeds))
            for root, r in todo:
                if (r.model, r.evaluator, r.val_samples) != key:
                    continue
                log(f"{r.model} {r.method} seed {r.seed} ({root})")
                new = rejudged(bench, judge, root, r)
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
    ns = p.parse_args(argv)
    if ns.evaluator_seeds < 1:
        p.error(f"--evaluator-seeds must be >= 1, got {ns.evaluator_seeds}")
    torch.set_num_threads(1)
    measure(ns.runs, ns.out, ns.evaluator_seeds, ns.methods, ns.models, ns.workers)
    print(f"re-judged rows in {ns.out / RESULTS}; tables: python bench/search_quality.py --merge {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
