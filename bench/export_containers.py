"""Exported 8-bit weights stored as uint8 (the default) or int8: how far each runs from the
fake-quantized model the search scored, and how fast, on this CPU.

onnxruntime runs a uint8-activation x int8-weight product on x86 CPUs without VNNI (AVX2) by adding
pairs of products in 16 bits, which saturates; uint8 x uint8 widens first. So the int8 container
can be faster and wrong on one CPU, and right on another. Per model, uniform W8A8: the largest
logit error relative to the largest logit and top-1 agreement over ``--images`` test images, and
the latency of one image with 1 thread, timed by haq's measurement protocol (both models
interleaved, as a measured table's entries are), as the ratio uint8 / int8 measured in the same run.

    python bench/export_containers.py                        # digits CNN and ResNet-20
    python bench/export_containers.py --models mobilenetv2 --images 100
"""

from __future__ import annotations

import argparse
import copy
import sys

import numpy as np
import torch

from haq.export import export_policy, run_onnx
from haq.hardware.device.machine import cpu_model, machine_fingerprint
from haq.hardware.device.runner import LocalRunner
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.measured import container_options
from haq.models import model_names
from haq.quant import LayerBits, QuantPolicy, apply_policy_, calibrate_
from haq.tables.schema import WEIGHT_CONTAINERS
from haq.workload import Workload, WorkloadConfig, load_workload

CPU = torch.device("cpu")


def cpu_features() -> str:
    """The CPU's model and the flags that decide onnxruntime's int8 kernels (from the machine fingerprint)."""
    flags = set(machine_fingerprint(probe=False).flags)
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{cpu_model()}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


def fake_quant_logits(wl: Workload, policy: QuantPolicy, calib: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The logits of the fake-quantized model the search evaluates."""
    q = apply_policy_(copy.deepcopy(wl.model), policy)
    calibrate_(q, [calib], CPU)
    with torch.no_grad():
        return q.eval()(x).numpy()


def measure(model: str, images: int, runner: LocalRunner) -> list[str]:
    """Table rows of one model: error, agreement and latency per container, and the ratio."""
    wl = load_workload(WorkloadConfig(model=model), CPU)
    calib, _ = wl.data.subset("train", 64)
    x, _ = wl.data.subset("test", images)
    policy = QuantPolicy({n: LayerBits(8, 8) for n in wl.layer_names})
    ref = fake_quant_logits(wl, policy, calib, x)
    models, rows = [], []
    for name in WEIGHT_CONTAINERS:
        exported = export_policy(wl.model, wl.layers, policy, wl.data.input_shape, calib, container_options(name))
        got = run_onnx(exported.onnx_bytes, x.numpy())
        error = float(np.abs(got - ref).max() / np.abs(ref).max())
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        models.append(exported.onnx_bytes)
        rows.append((name, error, agree))
    ms = {name: m.latency_ms for name, m in zip(WEIGHT_CONTAINERS, runner.measure_many(models))}
    out = [f"| {model} | {name} | {error:.2%} | {agree:.1%} | {ms[name]:.3f} |" for name, error, agree in rows]
    out.append(f"| {model} | uint8 / int8 latency | | | {ms['uint8'] / ms['int8']:.2f}x |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        nargs="+",
        default=["digits_cnn", "resnet20"],
        choices=model_names(),
        help="zoo models (default: digits_cnn resnet20)",
    )
    p.add_argument("--images", type=int, default=48, help="test images compared with the fake-quantized model (default 48)")
    p.add_argument(
        "--sessions",
        type=int,
        default=ProtocolConfig().sessions,
        help=f"most timing sessions per model, interleaved (default {ProtocolConfig().sessions}; haq's measurement protocol)",
    )
    ns = p.parse_args(argv)
    if ns.images < 1 or ns.sessions < 1:
        p.error(f"--images and --sessions must be at least 1 (got {ns.images} and {ns.sessions})")
    runner = LocalRunner(ProtocolConfig(sessions=ns.sessions))
    print(cpu_features())
    print("| model | weights | largest logit error / largest logit | top-1 agreement | ms per image, 1 thread |")
    print("|---|---|---|---|---|")
    for model in ns.models:
        for row in measure(model, ns.images, runner):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
