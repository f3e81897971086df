"""Exported 8-bit weights stored as uint8 (the default) or int8: how far each runs from the
fake-quantized model the search scored, and how fast, on this CPU.

onnxruntime runs a uint8-activation x int8-weight product on x86 CPUs without VNNI (AVX2) by adding
pairs of products in 16 bits, which saturates; uint8 x uint8 widens first. So the int8 container
can be faster and wrong on one CPU, and right on another. Per model, uniform W8A8: the largest
logit error relative to the largest logit and top-1 agreement over ``--images`` test images, and
the latency of one image with 1 thread (the minimum over interleaved rounds), as the ratio
uint8 / int8 measured in the same run.

    python bench/export_containers.py                        # digits CNN and ResNet-20
    python bench/export_containers.py --models mobilenetv2 --images 100
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from haq.export import ExportOptions, export_policy, run_onnx, session_options
from haq.models import model_names
from haq.quant import LayerBits, QuantPolicy, apply_policy_, calibrate_
from haq.workload import Workload, WorkloadConfig, load_workload

CPU = torch.device("cpu")
CONTAINERS = {"uint8": False, "int8": True}
"""Container name → ``ExportOptions.signed_weights``."""


def cpu_features() -> str:
    """The CPU's model and the flags that decide onnxruntime's int8 kernels (Linux; else unknown)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return "unknown CPU"
    text = info.read_text()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{model}; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


def fake_quant_logits(wl: Workload, policy: QuantPolicy, calib: torch.Tensor, x: torch.Tensor) -> np.ndarray:
    """The logits of the fake-quantized model the search evaluates."""
    q = apply_policy_(copy.deepcopy(wl.model), policy)
    calibrate_(q, [calib], CPU)
    with torch.no_grad():
        return q.eval()(x).numpy()


def latency_ms(sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int, runs: int) -> dict[str, float]:
    """Each session's minimum per-run time over ``rounds`` interleaved rounds of ``runs`` runs."""
    name = next(iter(sessions.values())).get_inputs()[0].name
    best = {k: float("inf") for k in sessions}
    for _ in range(rounds):
        for k, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(runs):
                sess.run(None, {name: x})
            best[k] = min(best[k], (time.perf_counter() - start) / runs * 1e3)
    return best


def measure(model: str, images: int, rounds: int) -> list[str]:
    """Table rows of one model: error, agreement and latency per container, and the ratio."""
    wl = load_workload(WorkloadConfig(model=model), CPU)
    calib, _ = wl.data.subset("train", 64)
    x, _ = wl.data.subset("test", images)
    policy = QuantPolicy({n: LayerBits(8, 8) for n in wl.layer_names})
    ref = fake_quant_logits(wl, policy, calib, x)
    sessions, rows = {}, []
    for name, signed in CONTAINERS.items():
        exported = export_policy(wl.model, wl.layers, policy, wl.data.input_shape, calib, ExportOptions(signed_weights=signed))
        got = run_onnx(exported.onnx_bytes, x.numpy())
        error = float(np.abs(got - ref).max() / np.abs(ref).max())
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        options = session_options()
        options.intra_op_num_threads = 1
        sessions[name] = ort.InferenceSession(exported.onnx_bytes, options, providers=["CPUExecutionProvider"])
        rows.append((name, error, agree))
    ms = latency_ms(sessions, x[:1].numpy().astype(np.float32), rounds, 20)
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
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default 30)")
    ns = p.parse_args(argv)
    if ns.images < 1 or ns.rounds < 1:
        p.error(f"--images and --rounds must be at least 1 (got {ns.images} and {ns.rounds})")
    print(cpu_features())
    print("| model | weights | largest logit error / largest logit | top-1 agreement | ms per image, 1 thread |")
    print("|---|---|---|---|---|")
    for model in ns.models:
        for row in measure(model, ns.images, ns.rounds):
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
