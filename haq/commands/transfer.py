"""``haq transfer``: reuse a trained search agent on a new device (or model): zero-shot, then fine-tune."""

from __future__ import annotations

import argparse
from pathlib import Path

from haq.commands.pick import add_pick_args, pick_config, report_pick
from haq.core.fileio import check_writable_dir
from haq.core.types import stderr_log as log
from haq.evaluation.config import EVALUATORS
from haq.jobs.flags import add_job_args, resolve_job
from haq.transfer.config import ZERO_SHOT_STARTS, TransferConfig


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.commands.problems import add_parallel_args, add_strict_arg

    d = TransferConfig(source="-", table="-")
    p = sub.add_parser("transfer", help="roll a trained search agent out on a new device table, then fine-tune it there")
    p.add_argument(
        "--from",
        dest="source",
        metavar="RUN_DIR",
        default=None,
        help="run directory of a `haq search` (or an earlier transfer); required unless --config gives it",
    )
    p.add_argument(
        "--device",
        metavar="TABLE",
        default=None,
        help="the new device: shipped cost table name (see `haq tables list`), a table file, or cpu (this machine's)",
    )
    add_strict_arg(p)
    p.add_argument("--model", default=None, help="a different zoo model to roll the agent out on (default: the source's)")
    p.add_argument("--dataset", default=None, help="dataset for --model (default: that model's own)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        metavar="N",
        help="square input side on the new device (default: the source's, or a new --model's own)",
    )
    p.add_argument(
        "--episodes", type=int, default=d.episodes, help="fine-tuning episodes after the zero-shot one (0: zero-shot only)"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="fine-tuning seed")
    p.add_argument("--budget", type=float, default=None, help="budget ratio on the new device (default: the source's)")
    p.add_argument("--budget-absolute", type=float, default=None, help="budget in the new device's units; overrides --budget")
    p.add_argument("--evaluator", default=None, help=f"{' or '.join(EVALUATORS)} (default: the source's)")
    p.add_argument("--noise", type=float, default=d.noise_sigma, help="initial exploration noise of fine-tuning (DDPG / TD3)")
    p.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_false",
        help="transfer the agent alone: do not replay the source's evaluations re-priced on the new device first",
    )
    p.add_argument(
        "--clone-steps",
        type=int,
        default=d.clone_steps,
        help="steps fitting the actor to the zero-shot policy (see --zero-shot) before the zero-shot episode (0: the "
        "actor learns from the critic instead)",
    )
    p.add_argument(
        "--zero-shot",
        choices=ZERO_SHOT_STARTS,
        default=d.zero_shot,
        help="with reuse: the zero-shot policy is the sensitivity allocation predicted best on the new device from the "
        "source's accuracies, when predicted to beat the best re-priced evaluation (predicted), or always that "
        "evaluation (best_reused)",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/<source run>-to-<table>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the transfer in --out (same settings; --episodes may grow)")
    add_parallel_args(p)
    add_pick_args(p)
    p.set_defaults(func=run)
    add_job_args(p)


def run(ns: argparse.Namespace) -> int:
    from haq.commands.cost import format_device_costs
    from haq.commands.search import budget_line, print_record, run_command
    from haq.runs.rundir import BEST_FILE
    from haq.tables.compare import cost_on_devices
    from haq.transfer.run import run_transfer, transfer_env
    from latency_tables import load_all

    ns, job = resolve_job(
        ns,
        "transfer",
        lambda n: {
            "transfer": TransferConfig(
                source=n.source,
                table=n.device,
                model=n.model,
                dataset=n.dataset,
                episodes=n.episodes,
                seed=n.seed,
                budget_ratio=n.budget,
                budget_absolute=n.budget_absolute,
                evaluator=n.evaluator,
                noise_sigma=n.noise,
                input_size=n.input_size,
                reuse_source=n.reuse,
                clone_steps=n.clone_steps,
                zero_shot=n.zero_shot,
            ),
            "pick": pick_config(n),
        },
        required={"source": "--from", "device": "--device"},
    )
    cfg = job.section("transfer")
    out = Path(ns.out) if ns.out else Path("runs") / f"{Path(cfg.source).resolve().name}-to-{Path(cfg.table).stem}-s{cfg.seed}"
    check_writable_dir(out)  # before any work starts
    env = transfer_env(cfg)
    problem, r = run_command(
        ns, job, env, out, lambda problem, p: run_transfer(cfg, problem, out, progress=p, resume=ns.resume, log=log)
    )
    z, source = r.records[0], r.details["source"]
    print(
        f"transfer: {source['model']} / {source['table']} agent -> {r.run_dir} ({r.episodes_done} episodes"
        + (f", resumed after {r.resumed_from})" if r.resumed_from else ")")
    )
    print(budget_line(r.budget))
    print(
        f"zero-shot (episode 0): reward {z.reward:+.4f}, clean {z.metrics.clean_acc:.4f}, latency {z.metrics.latency_ms:.4g} ms"
    )
    print_record("best", r.best)
    print("\nbest policy on every shipped device:")
    print(format_device_costs([("best", cost_on_devices(problem.workload.layers, r.best.quant_policy(), load_all()))]))
    print(f"best policy: {r.run_dir / BEST_FILE}")
    report_pick(r)
    return 0
