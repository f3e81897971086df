"""``haq export``: write a model as QDQ ONNX under a policy, checked against onnxruntime's graph."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from haq.commands.workload_args import add_workload_args, torch_device, workload_config
from haq.core import validate
from haq.core.errors import ConfigError, PolicyError
from haq.core.fileio import check_writable_file
from haq.core.types import stderr_log as log
from haq.export import export_policy
from haq.hardware.measured import container_options
from haq.quant import QuantPolicy
from haq.runs.rundir import EXPORT_WEIGHTS, recorded_weights
from haq.tables.schema import SIGNED_WEIGHTS, UNSIGNED_WEIGHTS, WEIGHT_CONTAINERS
from haq.workload import load_workload


@dataclass(frozen=True)
class ExportConfig:
    """Validated ``haq export`` arguments."""

    policy: Path
    onnx: Path
    calibration: int

    def __post_init__(self) -> None:
        if self.onnx.suffix != ".onnx":
            raise ConfigError(f"--onnx must name a .onnx file, got {self.onnx}")
        validate.count("--calibration", self.calibration, low=1, high=10_000)
        if not self.policy.is_file():
            raise ConfigError(f"--policy {self.policy} is not a file")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's public pattern
    p = sub.add_parser("export", help="export a model under a policy as onnxruntime-ready QDQ ONNX")
    add_workload_args(p)
    p.add_argument("--policy", required=True, help="policy JSON file (haq.policy)")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--calibration", type=int, default=64, help="training images used to calibrate activation clips (default 64)")
    p.add_argument(
        "--emulate", action="store_true", help="export bit widths the CPU cannot run on 8-bit containers instead of refusing"
    )
    p.add_argument(
        "--no-fence", action="store_true", help="refuse, instead of fencing, a float layer onnxruntime would quantize by itself"
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        choices=WEIGHT_CONTAINERS,
        help="how 8-bit weights are stored: uint8 at zero point 128 runs right on every CPU; int8 is faster where the "
        "CPU has VNNI or AMX and wrong on AVX2 CPUs without them (default: the container the policy's run was priced "
        f"with, its meta's '{EXPORT_WEIGHTS}', else uint8)",
    )
    weights.add_argument("--int8-weights", dest="weights", action="store_const", const=SIGNED_WEIGHTS, help="--weights int8")
    p.set_defaults(func=run)


def export_weights(asked: str | None, policy: QuantPolicy, source: Path) -> str:
    """The container to export ``policy`` with: the one asked for, else the one its run's costs were
    timed with, else uint8; saying so where the two differ, since the priced latency assumed the
    recorded one."""
    recorded = recorded_weights(policy.meta, f"{source} meta", PolicyError)
    if asked is not None and recorded is not None and asked != recorded:
        log(
            f"warning: {source} was priced with {recorded} weights and is exported with {asked} as asked; "
            "its latency on that table's CPU may differ from the priced one"
        )
    elif asked is None and recorded is not None:
        log(f"{source}: 8-bit weights stored as {recorded}, the container its run's table timed (--weights overrides)")
    return asked or recorded or UNSIGNED_WEIGHTS


def run(ns: argparse.Namespace) -> int:
    cfg = ExportConfig(Path(ns.policy), Path(ns.onnx), ns.calibration)
    policy = QuantPolicy.load(cfg.policy)
    options = container_options(export_weights(ns.weights, policy, cfg.policy), ns.emulate, fence=not ns.no_fence)
    check_writable_file(cfg.onnx, "--onnx")  # before the model is trained and calibrated
    wl = load_workload(workload_config(ns), torch_device(ns), log=log)
    x, _ = wl.data.subset("train", cfg.calibration)
    exported = export_policy(wl.model, wl.layers, policy, wl.data.input_shape, x, options)
    cfg.onnx.parent.mkdir(parents=True, exist_ok=True)
    exported.save(str(cfg.onnx))
    print(f"{cfg.onnx}: {len(exported.onnx_bytes) / 1024:.1f} KiB, {len(wl.layers)} layers")
    print("| layer | asked | realization | onnxruntime kernel |\n|---|---|---|---|")
    for layer in wl.layers:
        plan, kernel = exported.plans[layer.name], exported.kernels[layer.name]
        fence = " (fenced)" if layer.name in exported.fenced else ""
        print(f"| {layer.name} | w{plan.w_bits}a{plan.a_bits} | {plan.realization.value}{fence} | {kernel.label} |")
    return 0
