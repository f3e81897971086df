"""``haq evaluate``: full DQ fine-tune, clean / robust accuracy, predicted and measured cost of a policy."""

from __future__ import annotations

import argparse

from haq.commands.workload_args import add_workload_args, explain_uncovered, workload_config
from haq.core.types import stderr_log as log
from haq.evaluation.config import EVALUATORS
from haq.problem.config import DEFAULT_TABLE


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    from haq.commands.problems import add_strict_arg
    from haq.evaluation.final import MEASURE_MODES, SPLITS, FinalEvalConfig

    d = FinalEvalConfig()
    p = sub.add_parser("evaluate", help="fine-tune a policy fully and report clean / robust accuracy and its cost on a device")
    add_workload_args(p)
    p.add_argument("--policy", required=True, help="a policy JSON file (e.g. RUN_DIR/best_policy.json)")
    p.add_argument(
        "--device",
        default=DEFAULT_TABLE,
        help="shipped table name (`haq tables list`), a table file, or cpu (this machine's, built on first use)",
    )
    add_strict_arg(p)
    p.add_argument("--split", default=d.split, help=f"held-out split to measure accuracy on: {', '.join(SPLITS)}")
    p.add_argument("--samples", type=int, default=None, help="images of the split to use (default: all)")
    p.add_argument("--evaluator", default=d.evaluation.kind, help=f"{' or '.join(EVALUATORS)} (cheap: no fine-tune, no attacks)")
    p.add_argument(
        "--dq-epochs",
        type=int,
        default=d.evaluation.finetune_epochs,
        help="DQ fine-tuning epochs of the quantized policy (--finetune-epochs fine-tunes the float --checkpoint)",
    )
    p.add_argument(
        "--dq-lr",
        type=float,
        default=None,
        help="DQ fine-tuning learning rate (default: the one a search chooses for the model, kept in the cache; a "
        "run records its own in config.json as finetune_lr)",
    )
    p.add_argument("--robust-samples", type=int, default=d.evaluation.robust_samples, help="images attacked for robust accuracy")
    p.add_argument(
        "--measure",
        default=d.measure,
        help=f"{', '.join(MEASURE_MODES)}: time the exported model here (auto: when the table describes this machine)",
    )
    p.add_argument(
        "--emulate",
        action="store_true",
        help="when measuring, export bit widths this CPU cannot run on 8-bit containers instead of refusing",
    )
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    import dataclasses

    from haq.core.errors import PolicyError
    from haq.evaluation.final import FinalEvalConfig, evaluate_final, measurement_skipped
    from haq.jobs.problems import chosen_finetune_lr, load_device_table, local_measurer
    from haq.quant import QuantPolicy
    from haq.runs.rundir import recorded_weights
    from haq.training import parse_torch_device
    from haq.workload import load_workload

    evaluation = dataclasses.replace(
        FinalEvalConfig().evaluation, kind=ns.evaluator, finetune_epochs=ns.dq_epochs, robust_samples=ns.robust_samples
    )
    if ns.dq_lr is not None:
        evaluation = dataclasses.replace(evaluation, finetune_lr=ns.dq_lr)
    cfg = FinalEvalConfig(split=ns.split, samples=ns.samples, measure=ns.measure, emulate=ns.emulate, evaluation=evaluation)
    policy = QuantPolicy.load(ns.policy)
    table = load_device_table(ns.device, workload_config(ns), strict=ns.strict, log=log)
    recorded = recorded_weights(policy.meta, f"{ns.policy} meta", PolicyError)
    if recorded is not None and table.weight_container not in (None, recorded):
        log(
            f"warning: {ns.policy} was priced with {recorded} weights and table {table.name} timed "
            f"{table.weight_container}: the latency below is of the model stored as {table.weight_container}, "
            f"not of what haq export writes for this policy by default ({recorded})"
        )
    with explain_uncovered(workload_config(ns), [ns.device]):  # before any training
        wl = load_workload(workload_config(ns), parse_torch_device(ns.torch_device), log=log)
        if ns.dq_lr is None and evaluation.kind == "full" and evaluation.finetune_epochs > 0:
            rate = chosen_finetune_lr(wl, table, ns.device, log)
            cfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(evaluation, finetune_lr=rate))
        measurer = None if measurement_skipped(cfg, table) else local_measurer(wl, table, emulated=cfg.emulate, log=log)
        r = evaluate_final(wl, table, policy, cfg, log=log, measurer=measurer)
    m, ref = r.metrics, r.reference

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    print(f"{ns.policy} on {wl.config.model} / {table.name}, {r.samples} {r.split} images")
    print("| quantity | policy | float model |\n|---|---|---|")
    print(f"| clean accuracy | {pct(m.clean_acc)} | {pct(ref.clean_acc)} |")
    print(f"| robust accuracy (worst case) | {pct(m.robust_acc)} | {pct(ref.robust_acc)} |")
    for metric, value in r.predicted.items():
        if metric == "size_bits":
            print(f"| weight size (KiB) | {value / 8192:.2f} | |")
        else:
            print(f"| predicted {metric} ({'ms' if metric == 'latency' else 'mJ'}) | {value:.6g} | |")
    measured = "n/a" if r.measured_ms is None else f"{r.measured_ms:.4g} (noise {r.measured_noise:.3f})"
    print(f"| measured latency (ms) | {measured} | |")
    print(r.measure_note)
    return 0
