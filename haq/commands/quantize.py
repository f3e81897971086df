"""``haq quantize``: post-training quantization of a model at uniform bits or under a policy file."""

from __future__ import annotations

import argparse

from haq.commands.workload_args import add_workload_args, torch_device, workload_config
from haq.core.types import stderr_log as log
from haq.evaluation.ptq import evaluate_policy_ptq
from haq.quant import FLOAT_BITS, QuantPolicy
from haq.training import accuracy
from haq.workload import load_workload


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("quantize", help="quantize a model (uniform bits or a policy) and report accuracy and size")
    add_workload_args(p)
    p.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4, 2], help="uniform weight/activation bit widths to try")
    p.add_argument("--policy", default=None, help="a policy JSON file to evaluate instead of uniform bits")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    device = torch_device(ns)
    wl = load_workload(workload_config(ns), device, log=log)
    x, y = wl.data.subset("test", None)
    float_acc = accuracy(wl.model, x, y, device)
    float_size = sum(layer.params for layer in wl.layers) * FLOAT_BITS
    policies = (
        [(ns.policy, QuantPolicy.load(ns.policy))]
        if ns.policy
        else [(f"uniform {b}/{b}", QuantPolicy.uniform(wl.layer_names, b)) for b in ns.bits]
    )
    print(f"{wl.config.model} on {wl.data.name}: {len(wl.layers)} quantizable layers, test set {len(y)} images")
    print(f"| policy | test acc | weights (KiB) |\n|---|---|---|\n| float | {float_acc:.4f} | {float_size / 8192:.1f} |")
    for name, pol in policies:
        pol.check_layers(wl.layers)
        r = evaluate_policy_ptq(wl.model, wl.layers, pol, wl.data, device)
        print(f"| {name} | {r.accuracy:.4f} | {r.size_bits / 8192:.1f} |")
    return 0
