"""Reproduce Defensive Quantization (Lin et al. 2019) and the gradient-masking findings of
Bernhard et al. (2019) on the embedded data: the deep digits MLP and the 32×32 ResNet-20.

Rows: the float model, vanilla quantization-aware fine-tuning (β = 0) at 8/5/4/3/2/1 bits, and DQ
fine-tuning (β > 0) at the same bits; weights AND input activations of every layer quantized.
Columns, at two ε: clean, FGSM, PGD, transfer-PGD from the float model, SPSA, the float+quantized
ensemble PGD, the per-sample worst case over all of them, and error amplification at the first /
middle / last layer (measured on each model's own FGSM examples, which all move every pixel by ε).
Also: which attack was strongest and the white-box vs transfer / SPSA gaps (masking evidence),
and Bernhard's transfer matrix (source × target precision). The ensemble attack and the
transfer matrix run at the larger ε only.

Time budget (1 torch thread, fresh clone, so the float models are trained here too): the MLP
runs its zoo recipe and the full test split; ResNet-20 is reduced to 4 training epochs (zoo: 15),
one fine-tuning epoch of 6 batches per quantized row, 32 attacked test images, PGD-5 and SPSA
with 3 steps × 4 direction pairs, and ε = 0.02 / 0.05 (at 0.1 every ResNet row is at 0).

Run:  python bench/dq_reproduction.py [--quick] [--out DIR]
Results go to DIR/results.json (rewritten after every row) and DIR/*.png (needs haq[plot]);
DIR defaults to runs/dq_reproduction.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from haq.core.errors import ConfigError, HaqError
from haq.core.types import Log
from haq.evaluation.ptq import quantized_copy
from haq.models import default_cache_dir
from haq.quant import FLOAT_BITS, QuantPolicy
from haq.robust import (
    AttackConfig,
    DQConfig,
    craft,
    dq_finetune_,
    error_amplification,
    lipschitz_estimates,
    report_from_examples,
)
from haq.workload import Workload, WorkloadConfig, load_workload

ATTACK_COLUMNS = ("fgsm", "pgd", "transfer_pgd", "spsa", "ensemble_pgd")


@dataclass(frozen=True)
class ModelPlan:
    """What to run for one model.

    train_epochs: float-model training epochs (``None``: the zoo recipe).
    n: test samples attacked (``None``: the whole test split).
    bits: uniform w/a bit widths of the quantized rows.
    eps: the two (or more) L∞ radii.
    attack: attack budget (its ``eps`` is replaced per radius).
    dq / vanilla: fine-tuning of DQ rows and of vanilla rows (same schedule, β = 0).
    """

    model: str
    train_epochs: int | None
    n: int | None
    bits: tuple[int, ...]
    eps: tuple[float, ...]
    attack: AttackConfig
    dq: DQConfig

    def __post_init__(self) -> None:
        if not self.bits or any(not 1 <= b <= 8 for b in self.bits):
            raise ConfigError(f"{self.model}: bits must be a non-empty list of integers in 1..8, got {self.bits}")
        if not self.eps or any(not 0 < e < 1 for e in self.eps):
            raise ConfigError(f"{self.model}: eps values must lie in (0, 1), got {self.eps}")
        if self.dq.beta <= 0:
            raise ConfigError(f"{self.model}: DQ needs beta > 0, got {self.dq.beta}")

    @property
    def vanilla(self) -> DQConfig:
        """The vanilla (plain QAT) schedule: DQ's without the regularizer."""
        return replace(self.dq, beta=0.0)


def full_plans() -> list[ModelPlan]:
    """The default reproduction (fits a 10-minute budget on one CPU thread; see module notes)."""
    return [
        ModelPlan(
            "digits_mlp",
            None,
            None,
            (8, 5, 4, 3, 2, 1),
            (0.05, 0.1),
            AttackConfig(eps=0.1, pgd_steps=20, spsa_steps=20, spsa_samples=16),
            DQConfig(beta=5e-3, epochs=10, lr=1e-3),
        ),
        ModelPlan(
            "resnet20",
            4,
            32,
            (8, 5, 4, 3, 2, 1),
            (0.02, 0.05),
            AttackConfig(eps=0.1, pgd_steps=5, spsa_steps=3, spsa_samples=4, batch_size=64),
            DQConfig(beta=1e-2, epochs=1, lr=1e-3, max_batches=6),
        ),
    ]


def quick_plans() -> list[ModelPlan]:
    """A smoke-sized run: two bit widths, fewer samples and steps."""
    return [
        ModelPlan(
            "digits_mlp",
            None,
            120,
            (4, 1),
            (0.05, 0.1),
            AttackConfig(eps=0.1, pgd_steps=10, spsa_steps=8, spsa_samples=8),
            DQConfig(beta=5e-3, epochs=3, lr=1e-3),
        ),
        ModelPlan(
            "resnet20",
            4,
            16,
            (4, 1),
            (0.02, 0.05),
            AttackConfig(eps=0.1, pgd_steps=3, spsa_steps=2, spsa_samples=4, batch_size=64),
            DQConfig(beta=1e-2, epochs=1, lr=1e-3, max_batches=2),
        ),
    ]


@dataclass(frozen=True)
class Row:
    """One evaluated model: ``kind`` is float, vanilla or dq."""

    kind: str
    bits: int
    model: nn.Module

    @property
    def label(self) -> str:
        return "float" if self.kind == "float" else f"{self.kind} {self.bits}-bit"


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def build_rows(wl: Workload, plan: ModelPlan, device: torch.device, log: Log) -> list[Row]:
    """The float row and fine-tuned vanilla / DQ rows (each from a calibrated quantized copy)."""
    rows = [Row("float", FLOAT_BITS, wl.model)]
    for bits in plan.bits:
        for kind, cfg in (("vanilla", plan.vanilla), ("dq", plan.dq)):
            start = time.perf_counter()
            q = quantized_copy(wl.model, QuantPolicy.uniform(wl.layer_names, bits), wl.data, device)
            dq_finetune_(q, wl.data, cfg, device)
            rows.append(Row(kind, bits, q))
            log(f"  {plan.model}: {kind} {bits}-bit fine-tuned in {time.perf_counter() - start:.1f}s")
    return rows


def evaluate_row(
    row: Row,
    wl: Workload,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AttackConfig,
    transfer: torch.Tensor,
    device: torch.device,
    ensemble: bool,
) -> dict[str, Any]:
    """All attacks, the worst case and the amplification of one row at one ε.

    The float + quantized ensemble runs only where ``ensemble`` is set (the largest ε, to fit
    the time budget) and never on the float row (float + float is white-box PGD).
    """
    examples: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name in ATTACK_COLUMNS:
        if name == "ensemble_pgd" and (row.kind == "float" or not ensemble):
            continue
        start = time.perf_counter()
        examples[name] = (
            transfer if name == "transfer_pgd" else craft(name, row.model, x, y, cfg, device, wl.data.value_range, wl.model)
        )
        seconds[name] = time.perf_counter() - start
    report = report_from_examples(row.model, x, y, examples, device, cfg.eps, seconds)
    amp = error_amplification(row.model, x, examples["fgsm"], device)
    return {
        "clean": report.clean,
        "per_attack": dict(report.per_attack),
        "worst_case": report.worst_case,
        "strongest": report.strongest,
        "seconds": seconds,
        "amplification": amp,
    }


def transfer_matrix(
    rows: Sequence[Row], wl: Workload, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, device: torch.device
) -> dict[str, dict[str, float]]:
    """Accuracy of every target on transfer-PGD crafted on every source (float and vanilla rows)."""
    members = [r for r in rows if r.kind != "dq"]
    out: dict[str, dict[str, float]] = {}
    for src in members:
        x_adv = craft("transfer_pgd", src.model, x, y, cfg, device, wl.data.value_range, src.model)
        out[src.label] = {
            tgt.label: report_from_examples(tgt.model, x, y, {"t": x_adv}, device, cfg.eps).per_attack["t"] for tgt in members
        }
    return out


def run_model(
    plan: ModelPlan, device: torch.device, cache: Path, log: Log, save: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Everything for one model; ``save`` is called with partial results after every row."""
    start = time.perf_counter()
    wl = load_workload(WorkloadConfig(model=plan.model, train_epochs=plan.train_epochs), device, cache, log)
    x, y = wl.data.subset("test", plan.n)
    rows = build_rows(wl, plan, device, log)
    result: dict[str, Any] = {
        "model": plan.model,
        "dataset": wl.data.name,
        "n": len(y),
        "layers": wl.layer_names,
        "plan": {
            "train_epochs": plan.train_epochs,
            "bits": plan.bits,
            "eps": plan.eps,
            "attack": plan.attack.to_dict(),
            "dq": plan.dq.to_dict(),
        },
        "rows": [
            {"label": r.label, "kind": r.kind, "bits": r.bits, "lipschitz": lipschitz_estimates(r.model), "eps": {}} for r in rows
        ],
    }
    for eps in plan.eps:
        cfg = replace(plan.attack, eps=eps)
        transfer = craft("transfer_pgd", wl.model, x, y, cfg, device, wl.data.value_range, wl.model)
        for row, rec in zip(rows, result["rows"]):
            rec["eps"][str(eps)] = evaluate_row(row, wl, x, y, cfg, transfer, device, eps == max(plan.eps))
            log(f"  {plan.model} eps={eps} {row.label}: worst {rec['eps'][str(eps)]['worst_case']:.3f}")
            save(result)
    cfg = replace(plan.attack, eps=max(plan.eps))
    result["transfer_matrix"] = {"eps": cfg.eps, "acc": transfer_matrix(rows, wl, x, y, cfg, device)}
    result["seconds"] = time.perf_counter() - start
    save(result)
    return result


# ----------------------------------------------------------------------------------------- report


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _amp3(amp: dict[str, float]) -> tuple[float, float, float]:
    vals = list(amp.values())
    return vals[0], vals[len(vals) // 2], vals[-1]


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """The main table, the masking summary and the transfer matrices."""
    out: list[str] = []
    for res in results:
        layers = res["layers"]
        mid = layers[len(layers) // 2]
        out.append(f"\n### {res['model']} on {res['dataset']} ({res['n']} test images, {res['seconds']:.0f}s)\n")
        out.append(f"amplification Σ‖Δ‖/Σ‖x‖ at layer outputs: first `{layers[0]}`, middle `{mid}`, last `{layers[-1]}`\n")
        out.append(
            "| model | ε | clean | FGSM | PGD | T-PGD | SPSA | ensemble | worst | strongest | amp first | amp mid | amp last |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for eps in res["plan"]["eps"]:
            for row in res["rows"]:
                r = row["eps"][str(eps)]
                p = r["per_attack"]
                a = _amp3(r["amplification"])
                out.append(
                    f"| {row['label']} | {eps} | {_f(r['clean'])} | {_f(p['fgsm'])} | {_f(p['pgd'])} | "
                    f"{_f(p['transfer_pgd'])} | {_f(p['spsa'])} | {_f(p.get('ensemble_pgd'))} | **{_f(r['worst_case'])}** | "
                    f"{r['strongest']} | {a[0]:.2f} | {a[1]:.2f} | {a[2]:.2f} |"
                )
        out.append(masking_summary(res))
        tm = res["transfer_matrix"]
        labels = list(tm["acc"])
        out.append(f"\nTransfer matrix at ε = {tm['eps']} (rows: source, columns: target; accuracy of the target)\n")
        out.append("| source \\ target | " + " | ".join(labels) + " |")
        out.append("|---" * (len(labels) + 1) + "|")
        for src in labels:
            out.append(f"| {src} | " + " | ".join(_f(tm["acc"][src][t]) for t in labels) + " |")
    return "\n".join(out)


def masking_summary(res: dict[str, Any]) -> str:
    """Per ε: strongest attack per row and white-box PGD minus transfer / SPSA / ensemble.

    A positive gap means a black-box or transfer attack beat white-box PGD: masking evidence.
    """
    lines = [
        "\nMasking evidence (gap = PGD acc − other acc; > 0: white-box PGD was weaker)\n",
        "| model | ε | strongest | PGD − T-PGD | PGD − SPSA | PGD − ens | FGSM − worst |",
        "|---|---|---|---|---|---|---|",
    ]
    for eps in res["plan"]["eps"]:
        for row in res["rows"]:
            r = row["eps"][str(eps)]
            p = r["per_attack"]
            ens = None if "ensemble_pgd" not in p else p["pgd"] - p["ensemble_pgd"]
            lines.append(
                f"| {row['label']} | {eps} | {r['strongest']} | {p['pgd'] - p['transfer_pgd']:+.3f} | "
                f"{p['pgd'] - p['spsa']:+.3f} | {'—' if ens is None else f'{ens:+.3f}'} | {p['fgsm'] - r['worst_case']:+.3f} |"
            )
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Amplification vs depth and worst-case / PGD accuracy vs bits (vanilla vs DQ) as PNGs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise HaqError("plots need matplotlib: pip install 'haq[plot]' (or pass --no-plots)") from exc
    paths = []
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        eps = str(max(res["plan"]["eps"]))
        shown = {32, min(res["plan"]["bits"]), sorted(res["plan"]["bits"])[len(res["plan"]["bits"]) // 2]}
        for row in res["rows"]:
            if row["bits"] not in shown:
                continue
            amp = list(row["eps"][eps]["amplification"].values())
            style = "-" if row["kind"] != "dq" else "--"
            ax.plot(range(1, len(amp) + 1), amp, style, marker="o", ms=3, label=row["label"])
        ax.set(title=f"{res['model']}: error amplification (ε={eps})", xlabel="layer (execution order)", ylabel="Σ‖Δx‖ / Σ‖x‖")
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "amplification_vs_depth.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    n_eps = max(len(r["plan"]["eps"]) for r in results)
    fig, axes = plt.subplots(len(results), n_eps, figsize=(5 * n_eps, 3.6 * len(results)), squeeze=False)
    for i, res in enumerate(results):
        for j, eps in enumerate(res["plan"]["eps"]):
            ax = axes[i][j]
            bits = sorted(res["plan"]["bits"])
            float_row = next(r for r in res["rows"] if r["kind"] == "float")["eps"][str(eps)]
            for kind, color in (("vanilla", "tab:red"), ("dq", "tab:blue")):
                by_bits = {r["bits"]: r["eps"][str(eps)] for r in res["rows"] if r["kind"] == kind}
                ax.plot(bits, [by_bits[b]["worst_case"] for b in bits], "-o", color=color, label=f"{kind} worst case")
                ax.plot(bits, [by_bits[b]["per_attack"]["pgd"] for b in bits], ":", color=color, label=f"{kind} white-box PGD")
            ax.axhline(float_row["worst_case"], color="gray", ls="--", label="float worst case")
            ax.set(title=f"{res['model']} ε={eps}", xlabel="bits (weights = activations)", ylabel="robust accuracy", xticks=bits)
            ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "robust_accuracy_vs_bits.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two bit widths, fewer samples and steps")
    parser.add_argument("--models", nargs="+", default=None, help="subset of digits_mlp resnet20")
    parser.add_argument("--out", default="runs/dq_reproduction", help="output directory")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ns = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device("cpu")
    plans = quick_plans() if ns.quick else full_plans()
    if ns.models:
        unknown = set(ns.models) - {p.model for p in plans}
        if unknown:
            print(f"dq_reproduction: error: unknown model(s) {sorted(unknown)}; choose from digits_mlp resnet20", file=sys.stderr)
            return 2
        plans = [p for p in plans if p.model in ns.models]
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start, cpu_start = time.perf_counter(), time.process_time()
    results: list[dict[str, Any]] = []
    try:
        for plan in plans:
            log(f"== {plan.model}")
            done = list(results)
            results.append(
                run_model(
                    plan, device, default_cache_dir(), log, lambda partial: _atomic_json(out / "results.json", done + [partial])
                )
            )
        print(markdown(results))
        if not ns.no_plots:
            for p in plot(results, out):
                log(f"wrote {p}")
    except HaqError as exc:
        print(f"dq_reproduction: error: {exc}", file=sys.stderr)
        return 2
    total = time.perf_counter() - start
    print(
        f"\ntotal wall time {total:.0f}s, CPU time {time.process_time() - cpu_start:.0f}s "
        f"({'quick' if ns.quick else 'full'} run, 1 torch thread)"
    )
    _atomic_json(out / "results.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
