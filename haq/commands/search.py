"""``haq search``: search per-layer bit widths with an RL agent under a device budget."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from haq.commands.pick import add_pick_args, pick_config, report_pick
from haq.commands.workload_args import add_workload_args, explain_uncovered, workload_config
from haq.core.errors import ConfigError
from haq.core.fileio import check_writable_dir
from haq.core.types import stderr_log as log
from haq.evaluation.config import EvalConfig
from haq.hardware.feedback import FEEDBACK_CACHE
from haq.jobs.flags import add_job_args, resolve_job
from haq.problem.config import ACTION_PRIORS, METRICS, OBSERVATIONS, PROJECTIONS, BudgetConfig, EnvConfig
from haq.runs.finetune_lr_file import recorded_finetune_lr
from haq.runs.rundir import BEST_FILE, EpisodeRecord
from haq.search.config import AGENTS, DECISIONS, PRIOR_DECISIONS, REDRAW_SOURCES, AgentConfig, SearchConfig

if TYPE_CHECKING:
    from haq.jobs.document import Job
    from haq.problem.budget import Budget
    from haq.problem.problem import SearchProblem
    from haq.runs.progress import OnProgress
    from haq.runs.proposer import RunResult


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.commands.problems import add_parallel_args

    p = sub.add_parser("search", help="search per-layer bit widths under a latency / energy / size budget (RL agent)")
    add_workload_args(p)
    add_search_args(p)
    p.add_argument("--episodes", type=int, default=SearchConfig().episodes, help="episodes (evaluated policies) in all")
    p.add_argument("--agent", default=AgentConfig().algo, help=f"RL agent: {', '.join(AGENTS)}")
    p.add_argument(
        "--warmup", type=int, default=AgentConfig().warmup_episodes, help="random warm-up episodes (off-policy agents)"
    )
    p.add_argument(
        "--action-prior",
        default=EnvConfig().action_prior,
        help=f"where actions are centred: {', '.join(ACTION_PRIORS)} (auto: the ILP allocation unless robustness is scored)",
    )
    p.add_argument(
        "--observation",
        default=EnvConfig().observation,
        help=f"observation layout: {', '.join(OBSERVATIONS)} (v1 adds sensitivity)",
    )
    add_projection_arg(p)
    p.add_argument(
        "--decision",
        default=AgentConfig().decision,
        help=(
            f"what one agent step decides: {', '.join(DECISIONS)} (auto: portfolio without an action prior, else objective; "
            "policy: every layer at once; objective: the sensitivity ILP's per-layer error weights and budget, the ILP "
            "allocating; portfolio: a per-layer agent for half the episodes, then an objective agent; a policy search "
            "cannot be transferred)"
        ),
    )
    p.add_argument(
        "--prior-rungs",
        type=int,
        default=AgentConfig().prior_rungs,
        help="budgets the prior allocation is evaluated at before a centred agent starts on the best (0: the full budget's)",
    )
    p.add_argument(
        "--redraws",
        type=int,
        default=AgentConfig().redraws,
        help="an objective agent's proposal that repeats one of the run's policies is replaced up to this many times "
        "(0: never; off-policy objective agents, so decision objective or portfolio)",
    )
    p.add_argument(
        "--redraw-from",
        default=AgentConfig().redraw_from,
        help=f"where a replaced repeat comes from: {', '.join(REDRAW_SOURCES)} (agent: another draw from its policy; "
        "objective: the same action's next-best allocation not yet proposed, measured ahead of the default and the ILP on "
        "the digits MLP, behind the default on the digits CNN)",
    )
    p.add_argument(
        "--prior-decision",
        default=AgentConfig().prior_decision,
        help=f"what --decision auto runs on a problem with an action prior (clean-accuracy rewards): "
        f"{', '.join(PRIOR_DECISIONS)} (objective since 2026-12-07; a run stored before then ran layer, the centred "
        "per-layer agent)",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<table>-<agent>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (same settings; --episodes may grow)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 suits the small agent networks and shared machines)")
    add_parallel_args(p)
    add_pick_args(p)
    p.set_defaults(func=run)
    add_job_args(p)


def add_projection_arg(p: argparse.ArgumentParser) -> None:
    """``--projection`` (search, and baseline for its random draws): how an episode keeps within budget."""
    p.add_argument(
        "--projection",
        default=EnvConfig().projection,
        help=f"how episodes and random baseline draws keep within budget: {', '.join(PROJECTIONS)} "
        "(shift, ceiling: repair the request at the end)",
    )


def add_search_args(p: argparse.ArgumentParser) -> None:
    """Device, budget and evaluator flags (shared with ``haq demo``)."""
    from haq.commands.problems import add_strict_arg

    g = p.add_argument_group("device and budget")
    g.add_argument(
        "--device",
        default=EnvConfig().table,
        help="shipped table name (`haq tables list`), a table file, or cpu (this machine's, built on first use)",
    )
    g.add_argument("--budget", type=float, default=BudgetConfig().ratio, help="budget as a fraction of the uniform max-bits cost")
    g.add_argument(
        "--budget-absolute", type=float, default=None, help="budget in the metric's units (ms, mJ, bits); overrides --budget"
    )
    g.add_argument("--metric", default=BudgetConfig().metric, help=f"budget metric: {', '.join(METRICS)}")
    g.add_argument("--min-bits", type=int, default=EnvConfig().min_bits, help="lowest bit width an action maps to")
    g.add_argument(
        "--max-bits",
        type=int,
        default=EnvConfig().max_bits,
        help="highest bit width an action maps to (32 lets layers stay float, e.g. on CPU tables)",
    )
    g.add_argument("--pin-first-last", type=int, default=None, help="fix the first and last layer at this bit width")
    g.add_argument("--evaluator", default="full", help="full (DQ fine-tune + robust accuracy) or cheap (PTQ accuracy only)")
    g.add_argument(
        "--hardware-feedback", action="store_true", help="measure each policy's latency on this machine instead of the table"
    )
    g.add_argument(
        "--finetune-lrs",
        type=float,
        nargs="*",
        default=EvalConfig().finetune_lrs,
        metavar="LR",
        help="full evaluator: candidate DQ fine-tune learning rates; the one whose fine-tune recovers the most reward on "
        f"probe policies is chosen for this model before the search (kept in the cache); one rate: that rate; none: "
        f"{EvalConfig().finetune_lr:g}, unchosen, as runs of a haq before the choice did "
        f"(default: {' '.join(f'{lr:g}' for lr in EvalConfig().finetune_lrs)})",
    )
    add_strict_arg(g)


def env_config(ns: argparse.Namespace) -> EnvConfig:
    """Validated environment config from parsed flags (search and baseline both take ``--projection``)."""
    return EnvConfig(
        workload=workload_config(ns),
        table=ns.device,
        budget=BudgetConfig(metric=ns.metric, ratio=ns.budget, absolute=ns.budget_absolute),
        min_bits=ns.min_bits,
        max_bits=ns.max_bits,
        pin_first_last=ns.pin_first_last,
        evaluation=EvalConfig(kind=ns.evaluator, hardware_feedback=ns.hardware_feedback, finetune_lrs=tuple(ns.finetune_lrs)),
        torch_device=ns.torch_device,
        projection=ns.projection,
    )


def search_config(ns: argparse.Namespace) -> SearchConfig:
    """Validated search config from parsed flags."""
    return SearchConfig(
        env=dataclasses.replace(env_config(ns), action_prior=ns.action_prior, observation=ns.observation),
        agent=AgentConfig(
            algo=ns.agent,
            warmup_episodes=ns.warmup,
            prior_rungs=ns.prior_rungs,
            decision=ns.decision,
            redraws=ns.redraws,
            redraw_from=ns.redraw_from,
            prior_decision=ns.prior_decision,
        ),
        episodes=ns.episodes,
        seed=ns.seed,
    )


def default_out(cfg: SearchConfig) -> Path:
    """``runs/<model>-<table>-<agent>-s<seed>`` (a table path contributes its file stem)."""
    model = cfg.env.workload.model.replace(":", "_").replace(".", "_")
    return Path("runs") / f"{model}-{Path(cfg.env.table).stem}-{cfg.agent.algo}-s{cfg.seed}"


def run(ns: argparse.Namespace) -> int:
    from haq.search.run import run_search

    ns, job = resolve_job(ns, "search", lambda n: {"search": search_config(n), "pick": pick_config(n)})
    if ns.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {ns.threads}")
    torch.set_num_threads(ns.threads)
    cfg = job.section("search")
    out = Path(ns.out) if ns.out else default_out(cfg)
    check_writable_dir(out)  # before any training or episode, not after the first one
    _, result = run_command(
        ns, job, cfg.env, out, lambda problem, p: run_search(cfg, problem, out, progress=p, resume=ns.resume, log=log)
    )
    print(
        f"search: {result.episodes_done} episodes in {result.run_dir} (resumed after {result.resumed_from})"
        if result.resumed_from
        else f"search: {result.episodes_done} episodes in {result.run_dir}"
    )
    print(budget_line(result.budget))
    print_record("best", result.best)
    print(f"best policy: {result.run_dir / BEST_FILE}")
    report_pick(result)
    return 0


def run_command(
    ns: argparse.Namespace,
    job: Job,
    env: EnvConfig,
    out: Path,
    start: Callable[[SearchProblem, OnProgress | None], RunResult],
) -> tuple[SearchProblem, RunResult]:
    """What ``haq search``, ``baseline`` and ``transfer`` share: the problem built
    (:func:`run_problem`), then ``start(problem, progress)`` run into ``out`` as ``job`` (the job
    document stored, the final pick made, MLflow when asked) with a progress bar."""
    from haq.jobs.execute import run_tracked
    from haq.runs.progress import ProgressBar

    problem = run_problem(env, out, ns)
    result = run_tracked(job, out, problem, lambda p: start(problem, p), resume=ns.resume, progress=ProgressBar(), log=log)
    return problem, result


def run_problem(env: EnvConfig, out: Path, ns: argparse.Namespace) -> SearchProblem:
    """The problem a run command works on: an uncovered layer explained before any training,
    hardware-feedback measurements kept in the run directory, the --strict / --workers flags, a
    resumed run's DQ fine-tune rate kept."""
    from haq.jobs.problems import make_problem

    with explain_uncovered(env.workload, [env.table]):
        return make_problem(
            env,
            log=log,
            feedback_cache=out / FEEDBACK_CACHE,
            strict=ns.strict,
            workers=ns.workers,
            ray_address=ns.ray_address,
            finetune_lr=recorded_finetune_lr(out) if ns.resume else None,
        )


def budget_line(budget: Budget) -> str:
    """The resolved budget, in its metric's units and as a fraction of uniform max-bits."""
    return f"budget: {budget.metric} <= {budget.target:.6g} ({budget.target / budget.reference:.3f} of uniform max-bits)"


def print_record(label: str, record: EpisodeRecord) -> None:
    """One policy's bits and numbers as a short Markdown table."""
    m = record.metrics
    robust = f"{m.robust_acc:.4f}" if m.robust_acc is not None else "n/a"
    energy = f"{m.energy_mj:.4g}" if m.energy_mj is not None else "n/a"
    print(
        f"{label} (episode {record.episode}, reward {record.reward:+.4f}): clean {m.clean_acc:.4f}, robust {robust}, "
        f"latency {m.latency_ms:.4g} ms, energy {energy} mJ, size {m.size_bits / 8192:.2f} KiB"
    )
    print("| layer | w_bits | a_bits |\n|---|---|---|")
    for name, (w, a) in record.policy.items():
        print(f"| {name} | {w} | {a} |")


__all__ = ["add_search_args", "env_config", "print_record", "register", "run", "search_config"]
