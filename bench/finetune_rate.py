"""How well the full evaluator's DQ fine-tune rate serves a search: for each candidate rate, how
much one policy's reward moves with the evaluator's seed (noise), and how well one draw ranks
policies like the final evaluation a user runs (``haq evaluate``: 3 epochs over the training
split, the test split, 200 attacked images; the truth, averaged over its own seeds).

Why: the search sees one draw per policy. At 1e-3 the digits MLP's short fine-tune lowered the
accuracy it is there to recover and one policy's reward moved by 0.5 (std) with the seed; the
option ``EvalConfig.finetune_lrs`` chooses a rate per model, and this is the measurement that
decides whether a rate is better for the search, not only higher.

Policies: ``--policy name=w/a,...`` (repeatable), or the ``--top`` best distinct policies by
search reward of each ``--runs`` run of ``--run-seeds`` (``bench/search_quality.py --out``
directories, method ``rl``). Results are kept in ``--out`` (JSON, resumed stage by stage):

    python bench/finetune_rate.py --model digits_mlp --runs SQ --run-seeds 43 44 --rates 1e-3 1e-4 --out R.json
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
from policy_seeds import parse_policy, rewards_by_seed
from scipy.stats import spearmanr
from search_quality import RESULTS, Setting, Workbench, log, read_results, run_dir

from haq.core.fileio import atomic_write_text
from haq.evaluation.evaluators import policy_key
from haq.evaluation.final import FinalEvalConfig
from haq.evaluation.held_out import Images
from haq.quant import QuantPolicy
from haq.runs.rundir import RunDir

SEARCH_SEED_START = 101
TRUTH_SEED_START = 301
"""Evaluator seeds of the search-evaluator draws and of the truth: apart, so neither measures the other."""


def top_policies(root: Path, model: str, seeds: Sequence[int], top: int) -> list[QuantPolicy]:
    """The ``top`` best distinct policies by search reward of the ``rl`` run of each seed."""
    rows = {r.seed for r in read_results(root / RESULTS) if r.model == model and r.method == "rl"}
    policies = []
    for seed in seeds:
        if seed not in rows:
            raise SystemExit(f"{root / RESULTS} holds no rl run of {model} with seed {seed}; seeds there: {sorted(rows)}")
        seen: set[object] = set()
        for r in sorted(RunDir(run_dir(root, model, "rl", seed)).read_episodes(), key=lambda r: -r.reward):
            key = policy_key(r.quant_policy())
            if key not in seen:
                seen.add(key)
                policies.append(r.quant_policy())
            if len(seen) == top:
                break
    return policies


def rank_agreement(one_draw: Sequence[Sequence[float]], truth: Sequence[float]) -> tuple[float, float]:
    """Spearman of one seed's rewards with ``truth``, averaged over the seeds, and of the seeds' mean."""
    per_seed = [float(spearmanr([row[k] for row in one_draw], truth)[0]) for k in range(len(one_draw[0]))]
    return statistics.mean(per_seed), float(spearmanr([statistics.mean(row) for row in one_draw], truth)[0])


def report(rates: Sequence[float], found: dict[str, list[list[float]]]) -> list[str]:
    """The table: per truth rate, each search rate's noise and rank agreement; then the truths."""
    lines = ["| truth at | search rate | seed std of a policy's reward | one draw's Spearman | mean's Spearman | mean reward |"]
    lines.append("|---|---|---|---|---|---|")
    for t in rates:
        truth = [statistics.mean(row) for row in found[f"truth-{t:g}"]]
        for s in rates:
            rows = found[f"search-{s:g}"]
            one, mean = rank_agreement(rows, truth)
            noise = statistics.mean(statistics.stdev(row) for row in rows)
            reward = statistics.mean(statistics.mean(row) for row in rows)
            lines.append(f"| {t:g} | {s:g} | {noise:.3f} | {one:+.3f} | {mean:+.3f} | {reward:+.3f} |")
    first = [statistics.mean(row) for row in found[f"truth-{rates[0]:g}"]]
    for t in rates:
        truth = [statistics.mean(row) for row in found[f"truth-{t:g}"]]
        spread = (
            statistics.mean(statistics.stdev(row) for row in found[f"truth-{t:g}"]) if len(found[f"truth-{t:g}"][0]) > 1 else 0.0
        )
        better = sum(b > a for a, b in zip(first, truth))
        lines.append(
            f"\nfinal evaluation at {t:g}: mean {statistics.mean(truth):+.3f} (seed std {spread:.3f}), "
            f"above the one at {rates[0]:g} for {better} of {len(truth)} policies"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="digits_cnn", help="the benchmark's model")
    p.add_argument("--policy", action="append", default=[], help="name=w/a,... for every layer (repeatable)")
    p.add_argument("--runs", type=Path, default=None, help="a bench/search_quality.py --out directory to take policies from")
    p.add_argument("--run-seeds", type=int, nargs="+", default=(), help="the rl runs (seeds) of --runs to take policies from")
    p.add_argument("--top", type=int, default=4, help="best distinct policies taken from each run")
    p.add_argument(
        "--rates", type=float, nargs="+", default=(1e-3, 1e-4), help="DQ fine-tune rates compared (the first is the reference)"
    )
    p.add_argument("--seeds", type=int, default=10, help="evaluator seeds per policy under the search's evaluator")
    p.add_argument("--truth-seeds", type=int, default=3, help="seeds of the final evaluation (the truth)")
    p.add_argument(
        "--truth-epochs", type=int, default=FinalEvalConfig().evaluation.finetune_epochs, help="the truth's fine-tune epochs"
    )
    p.add_argument("--out", type=Path, required=True, help="results (JSON; a rerun keeps the stages already there)")
    ns = p.parse_args(argv)
    if ns.seeds < 2 or ns.truth_seeds < 1 or ns.top < 1 or ns.truth_epochs < 1 or len(ns.rates) < 1:
        p.error("--seeds must be >= 2, --truth-seeds, --top and --truth-epochs >= 1, and at least one --rates")
    if (ns.runs is None) != (not ns.run_seeds):
        p.error("--runs and --run-seeds go together")
    torch.set_num_threads(1)
    bench = Workbench(Setting(ns.model, "full", 0, ()), 1)
    try:
        problem = bench.problem(bench.env)
        try:
            policies = [parse_policy(text, problem.layer_names) for text in ns.policy]
        except ValueError as exc:
            raise SystemExit(f"--policy: {exc}") from None
        if ns.runs is not None:
            policies += top_policies(ns.runs, ns.model, ns.run_seeds, ns.top)
        if len(policies) < 2:
            p.error("rank agreement needs at least two policies (--policy, or --runs with --run-seeds)")
        asked = {
            "policies": [[[n, b.w_bits, b.a_bits] for n, b in q.layers.items()] for q in policies],
            "seeds": ns.seeds,
            "truth_seeds": ns.truth_seeds,
            "truth_epochs": ns.truth_epochs,
        }
        doc = json.loads(ns.out.read_text()) if ns.out.exists() else {**asked, "stages": {}}
        if {k: doc.get(k) for k in asked} != asked:
            raise SystemExit(f"{ns.out} holds results for other policies or seeds; give another --out")
        found: dict[str, list[list[float]]] = doc["stages"]
        search_images = Images("val", 0, problem.config.evaluation.val_samples)
        truth_cfg = dataclasses.replace(FinalEvalConfig().evaluation, finetune_epochs=ns.truth_epochs)
        test = Images("test", 0, len(problem.workload.data.test))  # type: ignore[arg-type]
        for lr in ns.rates:
            stages = (
                (
                    f"search-{lr:g}",
                    dataclasses.replace(problem.config.evaluation, kind="full", finetune_lr=lr),
                    search_images,
                    range(SEARCH_SEED_START, SEARCH_SEED_START + ns.seeds),
                ),
                (
                    f"truth-{lr:g}",
                    dataclasses.replace(truth_cfg, finetune_lr=lr),
                    test,
                    range(TRUTH_SEED_START, TRUTH_SEED_START + ns.truth_seeds),
                ),
            )
            for name, cfg, images, seeds in stages:
                if name in found:
                    continue
                log(f"{name}: {len(policies)} policies under {len(seeds)} evaluator seeds on {images}")
                found[name] = rewards_by_seed(problem, policies, images, seeds, cfg)
                atomic_write_text(ns.out, json.dumps(doc) + "\n")
        print(f"{ns.model}: {len(policies)} policies, search images {search_images}, truth on {test}")
        print("\n".join(report(ns.rates, found)))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
