"""What a user deploys from each run of a search-quality benchmark: ``haq``'s own final pick made
again on the run's log, then the chosen policy's final evaluation as ``haq evaluate`` gives it (its
longer DQ fine-tune over the training split, the whole test split, more attacked images) at the
run's own DQ fine-tune rate, averaged over evaluator seeds.

Why: the benchmark's figure is the pick's report on half the test split after the search's short
fine-tune; a user fine-tunes the chosen policy afresh before deploying it, so two searches, or
two evaluators, are compared best by what that gives.

    python bench/deployed.py SQ [SQ2 ...] --models digits_mlp --methods rl rl-multi --out D

Rows (one per run: model, method, seed, rate, chosen episode, final reward, clean and robust
accuracy, each evaluator seed's reward) go to ``--out``/deployed.json as they are made; a rerun
skips the runs already there. The table gives each method's median over its runs and the median
spread (std) of a run's reward across evaluator seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from search_quality import (
    RESULTS,
    Workbench,
    by_workbench,
    log,
    method_env,
    method_pick,
    read_results,
    run_dir,
    workbench_setting,
)

from haq.core.fileio import atomic_write_text
from haq.evaluation.final import FinalEvalConfig
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.runs.final_pick import PickConfig, pick_run
from haq.runs.replay import replay
from haq.runs.rundir import RunDir

ROWS = "deployed.json"
FINAL_SEED_START = 301
"""Evaluator seeds of the final evaluations: apart from the search's, the pick's and the reports'."""


def deployed(roots: Sequence[Path], out: Path, models: Sequence[str], methods: Sequence[str], seeds: int) -> list[dict[str, Any]]:
    """One row per run of ``roots`` (of ``models`` / ``methods`` when given), written as it is made."""
    path = out / ROWS
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    done = {(r["root"], r["model"], r["method"], r["seed"]) for r in rows}
    todo = [
        (root, r)
        for root in roots
        for r in read_results(root / RESULTS)
        if (not models or r.model in models)
        and (not methods or r.method in methods)
        and (str(root), r.model, r.method, r.seed) not in done
    ]
    out.mkdir(parents=True, exist_ok=True)
    final_cfg = FinalEvalConfig().evaluation
    for key, group in by_workbench(todo).items():
        bench = Workbench(workbench_setting(key), 1)
        try:
            test = Images("test", 0, len(bench.workload.data.test))  # type: ignore[arg-type]
            for root, r in group:
                problem = bench.problem(method_env(bench.env, r.method))
                records = RunDir(run_dir(root, r.model, r.method, r.seed)).read_episodes()
                replay(problem, records)
                final = pick_run(problem, records, dataclasses.replace(method_pick(r.method), **haq_pick()))
                cfg = dataclasses.replace(final_cfg, finetune_lr=r.finetune_lr)
                scores = []
                for seed in range(FINAL_SEED_START, FINAL_SEED_START + seeds):
                    ev = held_out_evaluator(bench.workload, bench.table, cfg, "full", test, seed)
                    m = ev.evaluate(final.pick.policy)
                    scores.append((problem.reward(m, ev.reference), m.clean_acc, m.robust_acc or 0.0))
                row = {
                    "root": str(root),
                    "model": r.model,
                    "method": r.method,
                    "seed": r.seed,
                    "finetune_lr": r.finetune_lr,
                    "episode": final.chosen.episode,
                    "reward": statistics.mean(s[0] for s in scores),
                    "clean": statistics.mean(s[1] for s in scores),
                    "robust": statistics.mean(s[2] for s in scores),
                    "rewards": [s[0] for s in scores],
                }
                rows.append(row)
                atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
                said = f"episode {row['episode']}, final reward {row['reward']:+.4f}"
                log(f"{r.model} {r.method} seed {r.seed} (lr {r.finetune_lr:g}): {said}")
        finally:
            bench.close()
    return rows


def haq_pick() -> dict[str, Any]:
    """``haq``'s own pick settings that the benchmark's pick leaves at their old values."""
    d = PickConfig()
    return {"repeats": d.repeats, "defer": d.defer, "select_seeds": d.select_seeds}


def seed_spread(rows: Sequence[dict[str, Any]]) -> str:
    """The median over ``rows`` of the standard deviation of a run's final reward across evaluator
    seeds: how far one fine-tune of a policy strays from another, the noise a comparison of the
    medians sits in ("n/a" with one seed, or for rows written before the seeds' rewards were kept)."""
    spreads = [statistics.stdev(r["rewards"]) for r in rows if len(r.get("rewards", ())) > 1]
    return f"{statistics.median(spreads):.3f}" if spreads else "n/a"


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Median final reward (and accuracies, and the spread across evaluator seeds) per model, method
    and DQ fine-tune rate."""
    lines = [
        "| model | method | DQ fine-tune lr | runs | final reward (median [range]) | clean | robust | std across seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted({(r["model"], r["method"], r["finetune_lr"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["method"], r["finetune_lr"]) == key]
        rewards = [r["reward"] for r in mine]
        spread = f"{statistics.median(rewards):+.3f} [{min(rewards):+.3f}, {max(rewards):+.3f}]"
        clean, robust = (100 * statistics.median(r[k] for r in mine) for k in ("clean", "robust"))
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]:g} | {len(mine)} | {spread} | {clean:.1f}% | {robust:.1f}% | {seed_spread(mine)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("runs", nargs="+", type=Path, help="bench/search_quality.py --out directories")
    p.add_argument("--out", type=Path, required=True, help=f"where {ROWS} goes (resumed)")
    p.add_argument("--models", nargs="+", default=(), help="only these models' runs")
    p.add_argument("--methods", nargs="+", default=(), help="only these methods' runs")
    p.add_argument("--seeds", type=int, default=3, help="evaluator seeds of each final evaluation")
    ns = p.parse_args(argv)
    if ns.seeds < 1:
        p.error(f"--seeds must be >= 1, got {ns.seeds}")
    for root in ns.runs:
        if not (root / RESULTS).is_file():
            p.error(f"{root} holds no {RESULTS}; give bench/search_quality.py --out directories")
    torch.set_num_threads(1)
    print(table(deployed(ns.runs, ns.out, ns.models, ns.methods, ns.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
