"""``haq robust``: robust accuracy of a model at uniform bits or under a policy, optionally after DQ."""

from __future__ import annotations

import argparse
import copy

from haq.commands.workload_args import add_workload_args, torch_device, workload_config
from haq.core import validate
from haq.core.errors import ConfigError
from haq.core.types import stderr_log as log
from haq.evaluation.ptq import quantized_copy
from haq.quant import QuantPolicy
from haq.robust import (
    ATTACKS,
    DEFAULT_ATTACKS,
    AttackConfig,
    DQConfig,
    dq_finetune_,
    robust_accuracy,
)
from haq.robust.evaluate import check_attacks
from haq.workload import load_workload


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("robust", help="adversarial robustness (per attack and worst case) of a quantized model")
    add_workload_args(p)
    p.add_argument("--policy", default=None, help="policy JSON file (default: uniform --bits)")
    p.add_argument("--bits", type=int, default=None, help="uniform weight/activation bits (omit with no --policy: float)")
    p.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[0.05, 0.1],
        help="L∞ radii in pixel units of [0, 1] images (8/255 = 0.031); normalized inputs get ε / std per channel",
    )
    p.add_argument("--attacks", nargs="+", default=list(DEFAULT_ATTACKS), help=f"from {', '.join(ATTACKS)}")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--samples", type=int, default=None, help="test images attacked (default: all)")
    p.add_argument("--dq-beta", type=float, default=None, help="DQ fine-tune first with this β (0 = plain QAT)")
    p.add_argument("--dq-epochs", type=int, default=3)
    p.add_argument("--dq-lr", type=float, default=1e-3)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    device = torch_device(ns)
    if ns.policy is not None and ns.bits is not None:
        raise ConfigError("give either --policy or --bits, not both")
    if ns.samples is not None:
        validate.count("--samples", ns.samples)
    check_attacks(ns.attacks, has_source=True)  # transfer attacks always get the float model here
    attack_cfgs = [AttackConfig(eps=e, pgd_steps=ns.pgd_steps, restarts=ns.restarts, seed=ns.seed) for e in ns.eps]
    dq_cfg = None if ns.dq_beta is None else DQConfig(beta=ns.dq_beta, epochs=ns.dq_epochs, lr=ns.dq_lr, seed=ns.seed)
    wl = load_workload(workload_config(ns), device, log=log)
    if ns.policy is not None:
        policy: QuantPolicy | None = QuantPolicy.load(ns.policy)
        label = ns.policy
    elif ns.bits is not None:
        policy = QuantPolicy.uniform(wl.layer_names, ns.bits)
        label = f"uniform {ns.bits}/{ns.bits}"
    else:
        policy, label = None, "float"
    model = wl.model
    if policy is not None:
        policy.check_layers(wl.layers)
        model = quantized_copy(wl.model, policy, wl.data, device)
    elif dq_cfg is not None:
        model = copy.deepcopy(wl.model)  # DQ of the float model: never modify the cached one
    if dq_cfg is not None:
        log(f"DQ fine-tuning ({dq_cfg.epochs} epochs, beta={dq_cfg.beta})")
        dq_finetune_(model, wl.data, dq_cfg, device)
        label += f" + DQ β={dq_cfg.beta}"
    x, y = wl.data.subset("test", ns.samples)
    print(f"{wl.config.model} ({label}) on {wl.data.name}: {len(y)} test images; transfer attacks crafted on the float model")
    print("| ε | clean | " + " | ".join(ns.attacks) + " | worst case | strongest |")
    print("|---" * (len(ns.attacks) + 4) + "|")
    for cfg in attack_cfgs:
        r = robust_accuracy(model, x, y, ns.attacks, cfg, device, wl.data.value_range, wl.model)
        cells = " | ".join(f"{r.per_attack[a]:.4f}" for a in ns.attacks)
        print(f"| {cfg.eps} | {r.clean:.4f} | {cells} | {r.worst_case:.4f} | {r.strongest} |")
    return 0
