"""What haq costs at ImageNet scale on this CPU: ResNet-18 and MobileNetV2 at 224×224.

On a generated 224×224 image folder (random RGB images, written once into a temporary
directory), for each model:

* per-evaluation time of the cheap evaluator (calibrated PTQ, clean accuracy) and the full one
  (plus a DQ fine-tune and worst-case robust accuracy), at the search's default evaluator
  settings (the folder's size bounds the subsets; the sizes used are printed), median of
  ``--evals`` evaluations of random mixed-precision policies after one warm-up;
* table build time on Bit Fusion (analytical, every distinct signature, batch 1) and on this
  CPU (onnxruntime, the standard timing protocol, batch 1). ``--quick`` times only
  ``--cpu-signatures`` signatures per model on the CPU and extrapolates the full build from
  their mean (marked "est."); without it every signature is measured, which takes long;
* the process's peak resident memory (``resource.getrusage``), after each model, and that of
  the measuring child processes.

The float weights are untrained (``--train-epochs 0``): time and memory do not depend on them.

    python bench/imagenet_scale.py --quick     (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import latency_tables
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import build_evaluator
from haq.hardware.build import extend_table
from haq.hardware.build_analytical import AnalyticalBackend
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.measured import MeasuredBackend
from haq.quant import LayerBits, LayerInfo, QuantPolicy
from haq.workload import WorkloadConfig, load_workload

MODELS = ("resnet18", "mobilenet_v2")


def make_folder(root: Path, classes: int, per_class: int, side: int, seed: int = 0) -> Path:
    """``classes`` class folders of ``per_class`` random ``side``×``side`` RGB JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c:02d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    return root


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def random_policies(layers: list[LayerInfo], n: int, seed: int) -> list[QuantPolicy]:
    rng = np.random.default_rng(seed)
    return [
        QuantPolicy({layer.name: LayerBits(int(rng.integers(2, 9)), int(rng.integers(2, 9))) for layer in layers})
        for _ in range(n)
    ]


def eval_seconds(model: str, root: Path, kind: str, evals: int) -> tuple[float, str]:
    """Median seconds per evaluation after a warm-up, and the subset sizes used."""
    cfg_wl = WorkloadConfig(model=model, dataset="imagefolder", data_root=str(root), train_epochs=0)
    wl = load_workload(cfg_wl, torch.device("cpu"))
    cfg = EvalConfig(kind=kind)
    evaluator = build_evaluator(wl, latency_tables.load("bitfusion"), cfg)
    policies = random_policies(wl.layers, evals + 1, seed=1)
    evaluator.evaluate(policies[0])  # warm-up: first-call allocations and decoding
    times = []
    for p in policies[1:]:
        start = time.perf_counter()
        evaluator.evaluate(p)
        times.append(time.perf_counter() - start)
    d = wl.data
    calib = min(cfg.calib_batches * cfg.batch_size, len(d.train))
    sizes = f"calib {calib}, val {min(cfg.val_samples, len(d.val))}"
    if kind == "full":
        dq = min(cfg.finetune_batches, -(-len(d.train) // cfg.batch_size))
        sizes += f", DQ {dq} batch(es) x {cfg.finetune_epochs} epoch(s), attacked {min(cfg.robust_samples, len(d.val))}"
    return statistics.median(times), sizes


def build_seconds(model: str, device: str, out: Path, limit: int | None, protocol: ProtocolConfig) -> tuple[float, int, int]:
    """Seconds to price ``model``'s distinct signatures (the first ``limit`` of them), how many were
    priced, and how many the model has."""
    from haq.workload import workload_layers

    layers = workload_layers(WorkloadConfig(model=model))
    distinct = list({layer.signature.key(): layer.signature for layer in layers}.values())
    todo = distinct if limit is None else distinct[:limit]
    backend = AnalyticalBackend(device) if device != "cpu" else MeasuredBackend(protocol)
    start = time.perf_counter()
    extend_table(backend, todo, out, 1, models=[model])
    return time.perf_counter() - start, len(todo), len(distinct)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="time only --cpu-signatures signatures per model on the CPU")
    ap.add_argument("--cpu-signatures", type=int, default=3)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=12, help="images per class (60/20/20 split)")
    ap.add_argument("--side", type=int, default=256, help="generated image side (decoded to 224×224)")
    ap.add_argument("--evals", type=int, default=3, help="timed evaluations per model and evaluator")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    protocol = ProtocolConfig()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "images", args.classes, args.per_class, args.side)
        print(
            f"image folder: {args.classes} classes x {args.per_class} images of {args.side}x{args.side}, decoded to 224x224; "
            f"torch threads 1; {args.evals} timed evaluations each (median)"
        )
        rows = []
        for model in args.models:
            cheap, cheap_sizes = eval_seconds(model, root, "cheap", args.evals)
            full, full_sizes = eval_seconds(model, root, "full", args.evals)
            bf_s, bf_n, n = build_seconds(model, "bitfusion", Path(tmp) / f"{model}-bf.json", None, protocol)
            limit = args.cpu_signatures if args.quick else None
            cpu_s, cpu_n, _ = build_seconds(model, "cpu", Path(tmp) / f"{model}-cpu.json", limit, protocol)
            cpu = f"{cpu_s:.0f} s ({cpu_n} sig.)"
            if cpu_n < n:
                cpu = f"{cpu_s:.0f} s for {cpu_n} sig.; est. {cpu_s / cpu_n * n:.0f} s for {n}"
            rows.append((model, cheap, full, f"{bf_s:.2f} s ({bf_n} sig.)", cpu, peak_mib()))
            print(f"{model}: cheap [{cheap_sizes}], full [{full_sizes}]", flush=True)
    print("\n| model | cheap eval (s) | full eval (s) | Bit Fusion table build | CPU table build | peak RSS so far (MiB) |")
    print("|---|---|---|---|---|---|")
    for model, cheap, full, bf, cpu, rss in rows:
        print(f"| {model} | {cheap:.2f} | {full:.2f} | {bf} | {cpu} | {rss:.0f} |")
    children = peak_mib(resource.RUSAGE_CHILDREN)
    print(f"\npeak RSS: this process {peak_mib():.0f} MiB, measuring child processes {children:.0f} MiB")
    if args.quick:
        print(f"--quick: the CPU build timed {args.cpu_signatures} signature(s) per model; 'est.' scales their mean to all")


if __name__ == "__main__":
    main()
