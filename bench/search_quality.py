"""Search quality: the RL search against uniform, random, greedy and ILP baselines at EQUAL numbers
of evaluated policies, several seeds, on the embedded default (digits CNN) and ResNet-20, both on
the Bit Fusion table at the same budget.

Every method gets its own evaluator cache (no method profits from another's evaluations) and is
timed end to end (sensitivity estimation, ILP solves, agent training and checkpoints included),
so "evaluations per minute" is what a user would see. Uniform, greedy and ILP are deterministic
given the trained model, so they run once per workload; RL and random run once per seed.

Columns: best reward (mean ± std over seeds) under the evaluator the search used; clean accuracy
and cost / budget of each run's best-reward policy; its worst-case robust accuracy after the
full evaluator (DQ fine-tune + attacks) re-scores it; evaluations per minute.

    python bench/search_quality.py --quick   # < 10 min on 2 cores: cheap evaluator while searching
    python bench/search_quality.py           # full: full evaluator while searching (hours, see --help)

Run directories (plot them with ``haq plot``) and results.json go to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from haq.baselines import BaselineConfig, run_baseline
from haq.commands.problems import make_problem
from haq.core.fileio import atomic_write_text
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import CachedEvaluator, FullEvaluator, QuantizingEvaluator, build_evaluator
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.problem import SearchProblem
from haq.runs.rundir import EpisodeRecord
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.workload import WorkloadConfig

METHODS = ("rl", "random", "greedy", "ilp", "uniform")
SEEDED = ("rl", "random")


@dataclass(frozen=True)
class Setting:
    """One workload of the benchmark and its budget in evaluations."""

    model: str
    evaluator: str
    evaluations: int
    seeds: tuple[int, ...]
    final_robust: bool
    val_samples: int = EvalConfig().val_samples
    metric: str = "latency"


@dataclass(frozen=True)
class RunResult:
    """One method on one workload with one seed."""

    model: str
    method: str
    seed: int
    evaluations: int
    seconds: float
    best: EpisodeRecord
    budget: float
    robust_acc: float | None


MODES = {
    "quick": (
        Setting("digits_cnn", "cheap", 40, (0, 1, 2), final_robust=True),
        Setting("resnet20", "cheap", 10, (0, 1), final_robust=False, val_samples=150),
    ),
    "full": (
        Setting("digits_cnn", "full", 60, (0, 1, 2), final_robust=True),
        Setting("resnet20", "full", 30, (0, 1, 2), final_robust=True),
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fresh(problem: SearchProblem, inner: QuantizingEvaluator) -> SearchProblem:
    """The same problem with an empty evaluator cache around ``inner`` (whose float reference,
    the expensive part of building an evaluator, is computed once per workload)."""
    return dataclasses.replace(problem, evaluator=CachedEvaluator(inner))


def run_method(problem: SearchProblem, method: str, seed: int, evaluations: int, out: Path) -> tuple[EpisodeRecord, int, float]:
    """Run one method; returns its best record, evaluations done and wall seconds."""
    start = time.perf_counter()
    if method == "rl":
        cfg = SearchConfig(env=problem.config, agent=AgentConfig(warmup_episodes=max(evaluations // 4, 2)), episodes=evaluations, seed=seed)
        result = run_search(cfg, problem, out)
        return result.best, result.episodes_done, time.perf_counter() - start
    res = run_baseline(BaselineConfig(method=method, evaluations=evaluations, seed=seed), problem, out)
    return res.best, res.episodes_done, time.perf_counter() - start


def bench_setting(setting: Setting, root: Path, sink: Callable[[RunResult], None]) -> list[RunResult]:
    env = EnvConfig(workload=WorkloadConfig(model=setting.model), budget=BudgetConfig(metric=setting.metric),
                    evaluation=EvalConfig(kind=setting.evaluator, val_samples=setting.val_samples))
    base = make_problem(env, log=log)
    # evaluators built here, not base's cached one: each method must start from an empty cache
    inner = build_evaluator(base.workload, base.table, env.evaluation)
    final = None
    if setting.final_robust:
        full = inner if isinstance(inner, FullEvaluator) else FullEvaluator(
            base.workload, base.table, dataclasses.replace(env.evaluation, kind="full"))
        final = CachedEvaluator(full)
    results = []
    for method in METHODS:
        for seed in setting.seeds if method in SEEDED else setting.seeds[:1]:
            out = root / setting.model / f"{method}-s{seed}"
            log(f"{setting.model}: {method} seed {seed}, {setting.evaluations} evaluations")
            best, n, seconds = run_method(fresh(base, inner), method, seed, setting.evaluations, out)
            robust = final.evaluate(best.quant_policy()).robust_acc if final is not None else None
            r = RunResult(setting.model, method, seed, n, seconds, best, base.budget.target, robust)
            sink(r)
            results.append(r)
    return results


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.mean(values):+.3f} ± {statistics.stdev(values):.3f}"


def _pct(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{100 * statistics.mean(known):.1f}%" if known else "n/a"


def markdown(results: list[RunResult], settings: tuple[Setting, ...]) -> str:
    """One row per model and method, seeds aggregated (mean ± std of the best reward)."""
    lines = [
        "| model | evaluator (val imgs) | method | seeds | evals | best reward | clean acc "
        "| robust acc (full re-eval) | cost / budget | evals / min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in settings:
        for method in METHODS:
            rows = [r for r in results if r.model == s.model and r.method == method]
            if not rows:
                continue
            evals = statistics.mean(r.evaluations for r in rows)
            lines.append(
                f"| {s.model} | {s.evaluator} ({s.val_samples}) | {method} | {len(rows)} | {evals:.0f} "
                f"| {_mean_std([r.best.reward for r in rows])} | {_pct([r.best.metrics.clean_acc for r in rows])} "
                f"| {_pct([r.robust_acc for r in rows])} "
                f"| {statistics.mean(r.best.metrics.cost(s.metric) / r.budget for r in rows):.3f} "
                f"| {sum(r.evaluations for r in rows) / (sum(r.seconds for r in rows) / 60):.1f} |"
            )
    return "\n".join(lines)


def to_json(r: RunResult) -> dict[str, Any]:
    return {
        "model": r.model, "method": r.method, "seed": r.seed, "evaluations": r.evaluations, "seconds": r.seconds,
        "budget": r.budget, "best_reward": r.best.reward, "best_metrics": r.best.metrics.to_dict(),
        "best_policy": {n: list(p) for n, p in r.best.policy.items()}, "robust_acc_full": r.robust_acc,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=("Cost on a shared 2-core machine: --quick about 6 min. Full mode: the digits CNN with the full "
                                        "evaluator takes 1.3-4 s per evaluation (~500 evaluations: 10-35 min); ResNet-20 with "
                                        "the full evaluator took 66 s per evaluation under load (~250 evaluations: 2-5 h)."))
    p.add_argument("--quick", action="store_true", help="cheap evaluator while searching, fewer evaluations and seeds")
    p.add_argument("--out", default="runs/bench-search-quality", help="where run directories and results.json go")
    p.add_argument("--models", nargs="+", default=None, help="restrict to these models (digits_cnn, resnet20)")
    p.add_argument("--evaluations", type=int, default=None, help="override the mode's evaluations per run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the mode's seeds")
    ns = p.parse_args(argv)
    if ns.evaluations is not None and ns.evaluations < 1:
        p.error(f"--evaluations must be >= 1, got {ns.evaluations}")
    torch.set_num_threads(1)
    settings = tuple(
        dataclasses.replace(s, evaluations=ns.evaluations or s.evaluations, seeds=tuple(ns.seeds or s.seeds))
        for s in MODES["quick" if ns.quick else "full"] if ns.models is None or s.model in ns.models
    )
    root = Path(ns.out)
    for s in settings:
        if any((root / s.model).glob("*/config.json")):
            p.error(f"{root / s.model} already holds runs; choose another --out")
    results: list[RunResult] = []

    def sink(r: RunResult) -> None:
        results.append(r)
        atomic_write_text(root / "results.json", json.dumps([to_json(x) for x in results], indent=2) + "\n")
        log(f"  best reward {r.best.reward:+.4f}, clean {r.best.metrics.clean_acc:.3f}, "
        f"{r.evaluations} evals in {r.seconds:.1f} s")

    start = time.perf_counter()
    for s in settings:
        bench_setting(s, root, sink)
    print(markdown(results, settings))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; run directories and results.json in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
