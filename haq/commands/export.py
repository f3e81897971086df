"""``haq export``: write a model as QDQ ONNX under a policy, checked against onnxruntime's graph."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from haq.commands.workload_args import add_workload_args, torch_device, workload_config
from haq.core import validate
from haq.core.errors import ConfigError
from haq.core.fileio import check_writable_file
from haq.core.types import stderr_log as log
from haq.export import ExportOptions, export_policy
from haq.quant import QuantPolicy
from haq.workload import load_workload


@dataclass(frozen=True)
class ExportConfig:
    """Validated ``haq export`` arguments."""

    policy: Path
    onnx: Path
    calibration: int
    options: ExportOptions

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
    p.add_argument(
        "--int8-weights",
        action="store_true",
        help="store 8-bit weights as int8: faster where the CPU has VNNI or AMX, wrong on AVX2 CPUs without them "
        "(the default, uint8 at zero point 128, does not overflow there)",
    )
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    options = ExportOptions(emulated=ns.emulate, fence=not ns.no_fence, signed_weights=ns.int8_weights)
    cfg = ExportConfig(Path(ns.policy), Path(ns.onnx), ns.calibration, options)
    policy = QuantPolicy.load(cfg.policy)
    check_writable_file(cfg.onnx, "--onnx")  # before the model is trained and calibrated
    wl = load_workload(workload_config(ns), torch_device(ns), log=log)
    x, _ = wl.data.subset("train", cfg.calibration)
    exported = export_policy(wl.model, wl.layers, policy, wl.data.input_shape, x, cfg.options)
    cfg.onnx.parent.mkdir(parents=True, exist_ok=True)
    exported.save(str(cfg.onnx))
    print(f"{cfg.onnx}: {len(exported.onnx_bytes) / 1024:.1f} KiB, {len(wl.layers)} layers")
    print("| layer | asked | realization | onnxruntime kernel |\n|---|---|---|---|")
    for layer in wl.layers:
        plan, kernel = exported.plans[layer.name], exported.kernels[layer.name]
        fence = " (fenced)" if layer.name in exported.fenced else ""
        print(f"| {layer.name} | w{plan.w_bits}a{plan.a_bits} | {plan.realization.value}{fence} | {kernel.label} |")
    return 0
