"""The DQ fine-tune rate's choice (:mod:`haq.problem.finetune_lr`) in-process and on N workers.

Before a full-evaluator search the rate is chosen by fine-tuning three probe policies at every
candidate under three evaluator seeds: 27 fine-tunes and their attacks, each as costly as one
full evaluation (ResNet-20 on one core: about 6 minutes in all). With ``--workers N`` a search
spreads them over its pool, one task each. This prints the choice's wall time in-process (one
torch thread) and on N Ray workers (one thread each), the ratio, and whether both measured the
same scores. The pool's start (Ray and the actors loading the workload) is timed apart: it is paid
once per search, whatever the choice costs. Runs alternate (in-process, pool, in-process, ...)
so a drift of a shared machine's speed falls on both.

    python bench/rate_choice.py --model resnet20               # 1 repeat, 2 workers
    python bench/rate_choice.py --model digits_cnn --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from haq.evaluation.config import EvalConfig
from haq.jobs.problems import load_device_table
from haq.parallel import start_pool
from haq.problem.config import EnvConfig
from haq.problem.finetune_lr import LrChoice, choose_finetune_lr
from haq.workload import WorkloadConfig, load_workload


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--table", default="bitfusion")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    wc = WorkloadConfig(model=args.model)
    env = EnvConfig(workload=wc, table=args.table, evaluation=EvalConfig(kind="full"))
    workload = load_workload(wc, torch.device("cpu"), log=log)
    table = load_device_table(args.table, wc, log=log)
    began = time.perf_counter()
    pool = start_pool(workload, table, env.evaluation, ("full",), "cpu", args.workers, log=log)
    started = time.perf_counter() - began
    here: list[float] = []
    there: list[float] = []
    choices: list[tuple[LrChoice, LrChoice]] = []
    try:
        for r in range(args.repeats):
            t = time.perf_counter()
            local = choose_finetune_lr(env, workload, table, log=log)
            here.append(time.perf_counter() - t)
            t = time.perf_counter()
            remote = choose_finetune_lr(env, workload, table, pool, log)
            there.append(time.perf_counter() - t)
            choices.append((local, remote))
            log(f"repeat {r + 1}: in-process {here[-1]:.1f} s, {args.workers} workers {there[-1]:.1f} s")
    finally:
        pool.close()
    ratios = [a / b for a, b in zip(here, there)]
    print(f"DQ fine-tune rate choice, {args.model}, {len(EnvConfig().evaluation.finetune_lrs)} candidates, 27 fine-tunes")
    print(f"pool start ({args.workers} workers, once per search): {started:.1f} s")
    print(f"in-process (1 thread): median {statistics.median(here):.1f} s")
    print(f"{args.workers} workers: median {statistics.median(there):.1f} s")
    print(f"speed-up per repeat: median {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})")
    same = all(a == b for a, b in choices)
    print(f"chosen {choices[0][0].lr:g}; the same scores both ways in every repeat: {'yes' if same else 'no'}")
    for lr, s in choices[0][0].scores.items():
        print(f"  {lr:g}: mean accuracy reward {s:+.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
