"""``haq baseline``: a non-RL baseline on the search's evaluator, budget and run-directory format."""

from __future__ import annotations

import argparse
from pathlib import Path

from haq.commands.pick import add_pick_args, pick_config, report_pick
from haq.commands.search import add_projection_arg, add_search_args, budget_line, env_config, print_record, run_command
from haq.commands.workload_args import add_workload_args
from haq.core.fileio import check_writable_dir
from haq.core.types import stderr_log as log
from haq.jobs.flags import add_job_args, resolve_job
from haq.runs.rundir import BEST_FILE


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.baselines import METHODS, BaselineConfig, SensitivityConfig
    from haq.commands.problems import add_parallel_args
    from haq.problem.sensitivity import ESTIMATORS

    p = sub.add_parser(
        "baseline", help="uniform / random / greedy / ILP bit widths under the same budget and evaluator as haq search"
    )
    add_workload_args(p)
    add_search_args(p)
    p.add_argument("--method", default=None, help=f"baseline: {', '.join(METHODS)} (required unless --config gives it)")
    p.add_argument(
        "--evaluations",
        type=int,
        default=BaselineConfig().evaluations,
        help="most policies to evaluate (compare with a search's --episodes)",
    )
    p.add_argument(
        "--ladder-floor",
        type=float,
        default=BaselineConfig().ladder_floor,
        help="greedy / ilp: lowest budget fraction their extra candidates are solved for",
    )
    p.add_argument(
        "--sensitivity-samples",
        type=int,
        default=SensitivityConfig().samples,
        help="greedy / ilp: training images used to estimate per-layer sensitivity",
    )
    p.add_argument(
        "--sensitivity",
        default=SensitivityConfig().estimator,
        help=f"greedy / ilp, one of {', '.join(ESTIMATORS)}: fisher (clean-loss Fisher estimate), "
        "measured (each layer quantized alone, loss on clean and adversarial images as the reward weighs them) "
        "or auto (measured when the reward has a robustness term and the float model keeps >= 10%% on its PGD images)",
    )
    add_projection_arg(p)
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<table>-<method>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same settings)")
    add_parallel_args(p)
    add_pick_args(p)
    p.set_defaults(func=run)
    add_job_args(p)


def run(ns: argparse.Namespace) -> int:
    from haq.baselines import BaselineConfig, SensitivityConfig, baseline_env, run_baseline

    ns, job = resolve_job(
        ns,
        "baseline",
        lambda n: {
            "baseline": BaselineConfig(
                method=n.method,
                evaluations=n.evaluations,
                seed=n.seed,
                ladder_floor=n.ladder_floor,
                sensitivity=SensitivityConfig(samples=n.sensitivity_samples, estimator=n.sensitivity),
            ),
            "env": env_config(n),
            "pick": pick_config(n),
        },
        required={"method": "--method"},
    )
    cfg, env = job.section("baseline"), baseline_env(job.section("env"))
    model = env.workload.model.replace(":", "_").replace(".", "_")
    out = Path(ns.out) if ns.out else Path("runs") / f"{model}-{Path(env.table).stem}-{cfg.method}-s{cfg.seed}"
    check_writable_dir(out)  # before any work starts
    problem, result = run_command(
        ns, job, env, out, lambda problem, p: run_baseline(cfg, problem, out, progress=p, resume=ns.resume, log=log)
    )
    print(f"baseline {cfg.method}: {len(result.records)} evaluations in {out} ({result.seconds:.1f} s)")
    print(budget_line(problem.budget))
    print_record("best", result.best)
    print(f"best policy: {out / BEST_FILE}")
    report_pick(result)
    return 0
