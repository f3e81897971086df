"""How far apart policies are under the full evaluator once its own luck is averaged out: each
policy re-scored on both images of the final pick (those that choose, those that report) under
many evaluator seeds.

Why: the full evaluator's reward is one draw of its DQ fine-tune, calibration and attacks, and on
the digits CNN one draw moves a policy's reward by about 0.15 on 180 images, so a mean over ten
seeds separates two policies only beyond about 0.1. ``bench/rejudge.py`` judges a run's pick
under the workload's own seed and 101, 102, ...; this script re-scores chosen policies under
another range (``--seed-start``), so a difference the judge reported can be checked on draws that
did not produce it.

    python bench/policy_seeds.py --model digits_cnn --seeds 10 --seed-start 201 \\
        --policy conv1=5/2,conv2=3/3,conv3=2/4,fc=4/5 --policy conv1=5/2,conv2=3/3,conv3=4/7,fc=4/5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Sequence

import torch
from search_quality import Setting, Workbench, log

from haq.evaluation.config import EvalConfig
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.problem.problem import SearchProblem
from haq.problem.select import pick_images
from haq.quant import QuantPolicy
from haq.runs.final_pick import PickConfig


def parse_policy(text: str, layers: Sequence[str]) -> QuantPolicy:
    """``name=w/a,...`` with every layer of the model once; one line naming the problem otherwise."""
    pairs: dict[str, tuple[int, int]] = {}
    for item in text.split(","):
        name, _, bits = item.partition("=")
        w, _, a = bits.partition("/")
        if not (name and w.isdigit() and a.isdigit()):
            raise ValueError(f"policy item {item!r} is not name=w/a (e.g. conv1=5/2)")
        pairs[name.strip()] = (int(w), int(a))
    if sorted(pairs) != sorted(layers):
        raise ValueError(f"a policy names every layer once: {', '.join(layers)}; got {', '.join(pairs)}")
    return QuantPolicy.from_pairs((name, pairs[name]) for name in layers)


def rewards_by_seed(
    problem: SearchProblem,
    policies: Sequence[QuantPolicy],
    images: Images,
    seeds: Sequence[int | None],
    evaluation: EvalConfig | None = None,
) -> list[list[float]]:
    """Each policy's full-evaluator reward on ``images`` under each of ``seeds`` (``None``: the
    workload's own), with ``evaluation``'s settings (default: the problem's): one evaluator per
    seed for all the policies, so its reference is measured once."""
    rewards: list[list[float]] = [[] for _ in policies]
    for seed in seeds:
        log(f"{images}, evaluator seed {'own' if seed is None else seed}")
        ev = held_out_evaluator(problem.workload, problem.table, evaluation or problem.config.evaluation, "full", images, seed)
        for row, metrics in zip(rewards, ev.evaluate_many(policies)):
            row.append(problem.reward(metrics, ev.reference))
    return rewards


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="digits_cnn", choices=("digits_cnn", "digits_mlp"), help="a full-evaluator workload")
    p.add_argument("--policy", action="append", required=True, help="name=w/a,... for every layer; repeat for more")
    p.add_argument("--seeds", type=int, default=10, help="evaluator seeds besides the workload's own")
    p.add_argument("--seed-start", type=int, default=201, help="the first of them (the judge uses 101 up)")
    ns = p.parse_args(argv)
    if ns.seeds < 1:
        p.error(f"--seeds must be >= 1, got {ns.seeds}")
    torch.set_num_threads(1)
    bench = Workbench(Setting(ns.model, "full", 0, ()), 1)
    try:
        problem = bench.problem(bench.env)
        try:
            policies = [parse_policy(text, problem.workload.layer_names) for text in ns.policy]
        except ValueError as e:
            p.error(str(e))
        halves = dict(zip(("choose", "report"), pick_images(problem, PickConfig().select_samples)))
        seeds = range(ns.seed_start, ns.seed_start + ns.seeds)
        print(f"| policy | images | own seed | mean over seeds {seeds[0]}-{seeds[-1]} | std | per seed |")
        print("|---|---|---|---|---|---|")
        scored = {half: rewards_by_seed(problem, policies, images, (None, *seeds)) for half, images in halves.items()}
        for i, text in enumerate(ns.policy):
            for half, images in halves.items():
                own, *rest = scored[half][i]
                spread = statistics.stdev(rest) if len(rest) > 1 else 0.0
                each = " ".join(f"{r:+.3f}" for r in rest)
                print(f"| {text} | {half} ({images}) | {own:+.3f} | {statistics.mean(rest):+.3f} | {spread:.3f} | {each} |")
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
