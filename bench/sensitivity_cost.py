"""What each sensitivity estimate costs, per model: the Fisher estimate against the measured one
(clean + PGD images, as a reward with a robustness term gets by default), timed in the same run.

Both run once per search or baseline, before its first evaluation. The measured estimate is two
forward passes over its images per layer and bit width (16 widths: weights and inputs at 1..8
bits) plus one PGD attack; the Fisher estimate is one backward pass per batch. Prints seconds and
the ratio, and the full evaluations the measured estimate is worth (one timed here, after a first
one that pays the evaluator's set-up).

    python bench/sensitivity_cost.py                          # digits CNN, ResNet-20, MobileNetV2
    python bench/sensitivity_cost.py --models digits_cnn --samples 128
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch

from haq.baselines.candidates import uniform_candidates
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.reward_sensitivity import reward_sensitivity
from haq.problem.sensitivity import SensitivityConfig
from haq.workload import WorkloadConfig


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["digits_cnn", "resnet20", "mobilenetv2"])
    p.add_argument("--samples", type=int, default=SensitivityConfig().samples, help="training images per estimate")
    ns = p.parse_args(argv)
    torch.set_num_threads(1)
    print("| model | layers | Fisher (s) | measured (s) | ratio | one full evaluation (s) | measured / full evaluation |")
    print("|---|---|---|---|---|---|---|")
    for model in ns.models:
        env = EnvConfig(workload=WorkloadConfig(model=model), evaluation=EvalConfig(kind="full"))
        problem = make_problem(env, log=lambda m: print(m, file=sys.stderr))
        w = problem.workload
        fisher = timed(lambda: reward_sensitivity(env, w, SensitivityConfig(samples=ns.samples, estimator="fisher")))
        measured = timed(lambda: reward_sensitivity(env, w, SensitivityConfig(samples=ns.samples, estimator="measured")))
        first, second = (c.pairs for c in uniform_candidates(problem.budget_model, 2))
        problem.score(problem.policy(first))  # the evaluator's one-off set-up is not an evaluation's cost
        full = timed(lambda: problem.score(problem.policy(second)))
        ratios = f"{measured / fisher:.0f}x | {full:.1f} | {measured / full:.1f}"
        print(f"| {model} | {len(w.layers)} | {fisher:.1f} | {measured:.1f} | {ratios} |", flush=True)
        problem.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
