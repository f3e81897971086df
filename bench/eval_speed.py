"""Evaluation speed: per model and evaluator, evaluations per minute and the overhead ratio.

The overhead ratio is an evaluation's wall time divided by the time of the same forward and
backward passes of the float model, timed alone in the same run, on the same images and batch
sizes. What an evaluation runs (``haq.evaluation.evaluators``):

* cheap: calibration forwards (``calib_batches`` × ``batch_size`` train images), then a forward
  pass over the ``val_samples`` held-out images;
* screen: the cheap passes, plus one forward over the transferred PGD examples of
  ``robust_samples`` images (crafted once per evaluator, not per evaluation; the per-sample
  worst case reuses the held-out pass's correctness, as in the full evaluation);
* full: the cheap passes, plus the DQ fine-tune (``finetune_epochs`` × ``finetune_batches``
  forward + backward passes of ``batch_size``), plus, on ``robust_samples`` images, FGSM (1
  forward + backward), PGD (``attack_steps`` forward + backward), transfer-PGD
  (``attack_steps`` forward + backward of the float model) and one forward per attack to score it.

A ratio near 1 means the evaluation is the arithmetic it must do; what is above 1 is overhead
(copying and quantizing the model, fake-quantization arithmetic, optimizer steps, Python).
Regressions show as a rising ratio at an unchanged pass count.

    python bench/eval_speed.py                         # digits CNN, digits MLP, ResNet-20; cheap, screen, full
    python bench/eval_speed.py --models resnet20 --evaluations 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from haq.baselines.candidates import random_candidates
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import build_evaluator
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.workload import Workload, WorkloadConfig

MODELS = ("digits_cnn", "digits_mlp", "resnet20")
KINDS = ("cheap", "screen", "full")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _forward(model: torch.nn.Module, x: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch])


def _forward_backward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, times: int) -> None:
    for _ in range(times):
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].clone().requires_grad_(True)
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), y[i : i + batch]).backward()


def float_passes(wl: Workload, cfg: EvalConfig) -> Callable[[], None]:
    """The forward / backward passes one evaluation of ``cfg.kind`` makes, on the float model."""
    model = wl.model.eval()
    calib, _ = wl.data.subset("train", cfg.calib_batches * cfg.batch_size)
    x, y = wl.data.subset("val", cfg.val_samples)
    xr, yr = x[: cfg.robust_samples], y[: cfg.robust_samples]
    tx, ty = wl.data.subset("train", cfg.finetune_batches * cfg.batch_size)
    n_attacks = len(cfg.attacks)

    def run() -> None:
        _forward(model, calib, cfg.batch_size)
        _forward(model, x, 512)
        if cfg.kind == "screen":
            _forward(model, xr, 512)  # the transferred examples
        if cfg.kind != "full":
            return
        _forward_backward(model, tx, ty, cfg.batch_size, cfg.finetune_epochs)
        _forward_backward(model, xr, yr, len(xr), 1 + 2 * cfg.attack_steps)  # FGSM + PGD + transfer-PGD
        for _ in range(n_attacks):
            _forward(model, xr, 512)

    return run


def measure(model: str, kind: str, evaluations: int, seed: int) -> dict[str, float]:
    cfg = EnvConfig(workload=WorkloadConfig(model=model), evaluation=EvalConfig(kind="cheap"))
    problem = make_problem(cfg, log=log)
    ev_cfg = EvalConfig(kind=kind)
    evaluator = build_evaluator(problem.workload, problem.table, ev_cfg)
    pols = [
        problem.policy(c.pairs)
        for c in random_candidates(problem.budget_model, evaluations, np.random.default_rng(seed), "stepwise")
    ]
    walls = []
    for p in pols:
        start = time.perf_counter()
        evaluator.evaluate(p)
        walls.append(time.perf_counter() - start)
    passes = float_passes(problem.workload, ev_cfg)
    passes()  # warm-up
    floats = []
    for _ in range(max(2, min(evaluations, 5))):
        start = time.perf_counter()
        passes()
        floats.append(time.perf_counter() - start)
    wall, flt = statistics.median(walls), statistics.median(floats)
    return {"eval_s": wall, "float_s": flt, "per_min": 60.0 / wall, "overhead": wall / flt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), help="zoo models to time")
    p.add_argument("--evaluators", nargs="+", default=list(KINDS), choices=KINDS, help="evaluators to time")
    p.add_argument("--evaluations", type=int, default=4, help="evaluations timed per model and evaluator (median reported)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policies")
    ns = p.parse_args(argv)
    if ns.evaluations < 1:
        p.error(f"--evaluations must be >= 1, got {ns.evaluations}")
    torch.set_num_threads(1)
    print("| model | evaluator | evaluation (s, median) | same float passes (s) | evaluations / min | overhead ratio |")
    print("|---|---|---|---|---|---|")
    for model in ns.models:
        for kind in ns.evaluators:
            log(f"{model}: {kind} evaluator, {ns.evaluations} evaluations")
            r = measure(model, kind, ns.evaluations, ns.seed)
            print(
                f"| {model} | {kind} | {r['eval_s']:.3f} | {r['float_s']:.3f} | {r['per_min']:.1f} | {r['overhead']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
