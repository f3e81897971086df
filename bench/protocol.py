"""Does the measurement protocol make latency reproducible? Protocol vs a naive timing loop.

Same models, same run, interleaved round by round so machine drift hits both alike:

* protocol: one fresh session per round through :func:`haq.hardware.device.timing.measure_models`
  (1 thread, spinning off, warm-up, batched samples, median);
* naive: one fresh session per round with onnxruntime's default options (all cores, spinning
  on), no warm-up, mean of 10 runs.

For each model and method it prints the median and the spread of the per-session values across
rounds (IQR / median and max / min), and the noise ratio naive / protocol. A second protocol
variant with TVM-style 20 ms samples shows what long samples do on a loaded machine. Models:
zoo models exported by :mod:`haq.export` at fp32 and int8 (weights trained on first use).

    python bench/protocol.py --rounds 7 [--models digits_cnn resnet20] [--min-repeat-ms 1 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from haq.hardware.device.measurement import relative_iqr
from haq.hardware.device.session import random_feeds
from haq.hardware.device.settings import ProtocolConfig
from haq.hardware.device.timing import measure_models
from haq.hardware.feedback import QDQExporter
from haq.quant import FLOAT_BITS, QuantPolicy
from haq.workload import WorkloadConfig, load_workload

NAIVE_RUNS = 10


def naive_session_ms(model: bytes) -> float:
    """What people often do: default session, no warm-up, mean of a few runs."""
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds = random_feeds(sess, 0)
    start = time.perf_counter()
    for _ in range(NAIVE_RUNS):
        sess.run(None, feeds)
    return (time.perf_counter() - start) * 1e3 / NAIVE_RUNS


def export_models(names: list[str], cache_dir: Path | None) -> dict[str, bytes]:
    """Each zoo model at fp32 and uniform int8, as ONNX bytes."""
    out: dict[str, bytes] = {}
    exporter = QDQExporter()
    for name in names:
        wl = load_workload(WorkloadConfig(model=name), torch.device("cpu"), cache_dir, log=_log)
        for bits in (FLOAT_BITS, 8):
            label = f"{name}/{'fp32' if bits == FLOAT_BITS else 'int8'}"
            out[label] = exporter(wl, QuantPolicy.uniform(wl.layer_names, bits, bits))
    return out


def spread(values: list[float]) -> tuple[float, float]:
    """(IQR / median, max / min) of per-session values."""
    arr = np.asarray(values)
    return relative_iqr(arr), float(arr.max() / arr.min())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "digits_mlp"], help="zoo models")
    parser.add_argument("--rounds", type=int, default=7, help="fresh sessions per model and method")
    parser.add_argument(
        "--min-repeat-ms",
        type=float,
        nargs="+",
        default=[ProtocolConfig().min_repeat_ms, 20.0],
        help="protocol variants by sample length (the first is the one the ratios use)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = os.environ.get("HAQ_CACHE_DIR")
    models = export_models(args.models, Path(cache) if cache else None)
    labels = list(models)
    variants = {f"protocol {ms:g} ms": ProtocolConfig(sessions=1, max_retries=0, min_repeat_ms=ms) for ms in args.min_repeat_ms}
    methods = [*variants, "naive"]
    values: dict[tuple[str, str], list[float]] = {(meth, k): [] for meth in methods for k in labels}
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", file=sys.stderr)
    start = time.perf_counter()
    for rnd in range(args.rounds):
        for name, cfg in variants.items():
            for label, m in zip(labels, measure_models([models[k] for k in labels], cfg)):
                values[(name, label)].append(m.latency_ms)
        for label in labels:
            values[("naive", label)].append(naive_session_ms(models[label]))
        print(f"round {rnd + 1}/{args.rounds} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    print(f"\n{args.rounds} fresh sessions per model and method, interleaved; load average at end {os.getloadavg()[0]:.2f}\n")
    print("| model | method | median of sessions (ms) | IQR/median | max/min |\n|---|---|---|---|---|")
    for label in labels:
        for meth in methods:
            iqr_rel, rng = spread(values[(meth, label)])
            print(f"| {label} | {meth} | {np.median(values[(meth, label)]):.4f} | {iqr_rel:.3f} | {rng:.3f} |")
    base = methods[0]
    ratio_iqr = [spread(values[("naive", k)])[0] / max(spread(values[(base, k)])[0], 1e-12) for k in labels]
    ratio_rng = [(spread(values[("naive", k)])[1] - 1) / max(spread(values[(base, k)])[1] - 1, 1e-12) for k in labels]
    print(
        f"\nnoise ratio naive / {base} (geometric mean over {len(labels)} models): IQR/median {_gmean(ratio_iqr):.1f}x, "
        f"(max/min - 1) {_gmean(ratio_rng):.1f}x; wall {time.perf_counter() - start:.0f} s"
    )
    return 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def _gmean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


if __name__ == "__main__":
    sys.exit(main())
