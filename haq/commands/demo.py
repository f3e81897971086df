"""``haq demo``: a short search on the embedded default (digits CNN, Bit Fusion table, no download),
its final pick (the top policies re-scored on held-out images), its best and chosen policies
beside uniform 8-bit and 4-bit under the same evaluator, and the plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from haq.commands.pick import add_pick_args, pick_config, report_pick
from haq.commands.search import print_record
from haq.core.errors import HaqError
from haq.core.fileio import check_writable_dir
from haq.core.types import stderr_log as log
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.search.config import AgentConfig, SearchConfig

DEMO_EPISODES = 40


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("demo", help="a short bit-width search on the embedded default (digits CNN, Bit Fusion; no download)")
    p.add_argument("--episodes", type=int, default=DEMO_EPISODES, help="search episodes")
    p.add_argument("--evaluator", default="full", help="full (DQ fine-tune + robust accuracy) or cheap (PTQ accuracy only)")
    p.add_argument("--seed", type=int, default=0, help="search seed")
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<time>)")
    add_pick_args(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.jobs.execute import with_pick
    from haq.runs.progress import ProgressBar
    from haq.search.run import run_search

    torch.set_num_threads(1)
    start = time.perf_counter()
    cfg = SearchConfig(
        env=EnvConfig(evaluation=EvalConfig(kind=ns.evaluator)),
        agent=AgentConfig(warmup_episodes=10),
        episodes=ns.episodes,
        seed=ns.seed,
    )
    out = Path(ns.out) if ns.out else Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    check_writable_dir(out)  # before any work starts
    problem = make_problem(cfg.env, log=log)
    ref = problem.evaluator.reference
    log(
        f"searching {cfg.env.workload.model} on {problem.table.name}: {len(problem.layer_names)} layers, "
        f"{cfg.env.budget.metric} budget {cfg.env.budget.ratio:g} x uniform 8-bit, "
        f"{cfg.episodes} episodes, {ns.evaluator} evaluator"
    )
    result = run_search(cfg, problem, out, progress=ProgressBar(), log=log)
    result = with_pick(pick_config(ns), out, problem, result, log)
    print_record("best policy found", result.best)
    report_pick(result)
    print()
    robust = f"{ref.robust_acc:.4f}" if ref.robust_acc is not None else "n/a"
    print(f"float model: clean {ref.clean_acc:.4f}, robust {robust} (same {cfg.env.evaluation.val_samples} held-out images)")
    print("| policy | reward | clean acc | robust acc | latency (ms) | energy (mJ) | size (KiB) | within budget |")
    print("|---|---|---|---|---|---|---|---|")
    print(_row("searched (best)", problem, dict(result.best.policy)))
    if result.final is not None:
        print(_row(f"final pick (episode {result.final.chosen.episode})", problem, dict(result.final.chosen.policy)))
    for bits in (8, 4):
        print(_row(f"uniform {bits}-bit", problem, {n: (bits, bits) for n in problem.layer_names}))
    print(f"\nbudget: {result.budget.metric} <= {result.budget.target:.4g} ms; run directory: {result.run_dir}")
    try:
        from haq.plots import plot_run

        paths = plot_run(result.run_dir)
        print("plots: " + ", ".join(str(p) for p in paths))
    except HaqError as exc:
        print(f"plots: not drawn ({exc})")
    log(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0


def _row(label: str, problem: SearchProblem, pairs: dict[str, tuple[int, int]]) -> str:
    scored = problem.score(problem.policy([pairs[n] for n in problem.layer_names]))
    m = scored.metrics
    robust = f"{m.robust_acc:.4f}" if m.robust_acc is not None else "n/a"
    energy = f"{m.energy_mj:.4g}" if m.energy_mj is not None else "n/a"
    within = "yes" if m.cost(problem.budget.metric) <= problem.budget.target * (1 + 1e-9) else "no"
    return (
        f"| {label} | {scored.reward:+.4f} | {m.clean_acc:.4f} | {robust} | {m.latency_ms:.4g} | {energy} | "
        f"{m.size_bits / 8192:.2f} | {within} |"
    )
