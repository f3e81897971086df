"""``haq transfer``: reuse a trained search agent on a new device (or model): zero-shot, then fine-tune."""

from __future__ import annotations

import argparse
from pathlib import Path

from haq.commands.common import log
from haq.evaluation.config import EVALUATORS
from haq.transfer.config import TransferConfig


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    d = TransferConfig(source="-", table="-")
    p = sub.add_parser("transfer", help="roll a trained search agent out on a new device table, then fine-tune it there")
    p.add_argument("--from", dest="source", metavar="RUN_DIR", required=True, help="run directory of a `haq search` (or an earlier transfer)")
    p.add_argument("--device", metavar="TABLE", required=True, help="the new device: shipped cost table name (see `haq tables list`) or a table file")
    p.add_argument("--model", default=None, help="a different zoo model to roll the agent out on (default: the source's)")
    p.add_argument("--dataset", default=None, help="dataset for --model (default: that model's own)")
    p.add_argument("--episodes", type=int, default=d.episodes, help="fine-tuning episodes after the zero-shot one (0: zero-shot only)")
    p.add_argument("--seed", type=int, default=d.seed, help="fine-tuning seed")
    p.add_argument("--budget", type=float, default=None, help="budget ratio on the new device (default: the source's)")
    p.add_argument("--budget-absolute", type=float, default=None, help="budget in the new device's units; overrides --budget")
    p.add_argument("--evaluator", default=None, help=f"{' or '.join(EVALUATORS)} (default: the source's)")
    p.add_argument("--noise", type=float, default=d.noise_sigma, help="initial exploration noise of fine-tuning (DDPG / TD3)")
    p.add_argument("--out", default=None, help="run directory (default runs/<source run>-to-<table>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the transfer in --out (same settings; --episodes may grow)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from haq.commands.cost import format_device_costs
    from haq.commands.problems import make_problem
    from haq.commands.search import FEEDBACK_CACHE, print_record
    from haq.runs.progress import ProgressBar
    from haq.tables.compare import cost_on_devices
    from haq.transfer.run import run_transfer, transfer_env
    from latency_tables import load_all

    cfg = TransferConfig(
        source=ns.source, table=ns.device, model=ns.model, dataset=ns.dataset, episodes=ns.episodes, seed=ns.seed,
        budget_ratio=ns.budget, budget_absolute=ns.budget_absolute, evaluator=ns.evaluator, noise_sigma=ns.noise,
    )
    out = Path(ns.out) if ns.out else Path("runs") / f"{Path(ns.source).resolve().name}-to-{Path(ns.device).stem}-s{ns.seed}"
    problem = make_problem(transfer_env(cfg), log=log, feedback_cache=out / FEEDBACK_CACHE)
    r = run_transfer(cfg, problem, out, progress=ProgressBar(), resume=ns.resume, log=log)
    z, source = r.records[0], r.details["source"]
    print(f"transfer: {source['model']} / {source['table']} agent -> {r.run_dir} ({r.episodes_done} episodes"
          + (f", resumed after {r.resumed_from})" if r.resumed_from else ")"))
    print(f"budget: {r.budget.metric} <= {r.budget.target:.6g} ({r.budget.target / r.budget.reference:.3f} of uniform max-bits)")
    print(f"zero-shot (episode 0): reward {z.reward:+.4f}, clean {z.metrics.clean_acc:.4f}, latency {z.metrics.latency_ms:.4g} ms")
    print_record("best", r.best)
    print("\nbest policy on every shipped device:")
    print(format_device_costs([("best", cost_on_devices(problem.workload.layers, r.best.quant_policy(), load_all()))]))
    print(f"best policy: {r.run_dir / 'best_policy.json'}")
    return 0
