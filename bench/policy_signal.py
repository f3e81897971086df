"""How much of a run's reward the whole policy predicts: the signal a whole-policy critic can learn.

For each run directory (an ``episodes.jsonl`` log of any search or baseline), a ridge regression of
the reward on one feature per layer and operand, ``2^-bits`` (the scale of the rounding noise that
width adds), plus an unpenalized mean, is fitted to the first ``--fit`` episodes and ranks the rest
(Spearman's rank correlation with their logged rewards). Why: an agent deciding one layer per step
learns each layer's worth averaged over the others; whether the whole policy, seen at once, tells
the reward apart is what ``AgentConfig.decision = "policy"`` bets on
(:mod:`haq.search.whole_policy`). Printed per run and per ridge weight.

    python bench/policy_signal.py RUN [RUN ...] [--fit 200] [--ridge 0.1 1 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr


def read_log(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The log's ``2^-bits`` features (layers in the first episode's order, weights then
    activations per layer) and rewards; one line naming the problem if it is not a run's log."""
    path = run / "episodes.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        names = list(rows[0]["policy"])
        bits = np.array([[b for n in names for b in row["policy"][n]] for row in rows], dtype=np.float64)
        rewards = np.array([float(row["reward"]) for row in rows])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise SystemExit(f"{path}: not a run's episode log ({type(e).__name__}: {e})") from None
    return np.exp2(-bits), rewards


def held_out_rank(x: np.ndarray, y: np.ndarray, fit: int, ridge: float) -> float:
    """Spearman correlation between the rewards of episodes ``fit:`` and their prediction by a
    ridge fit (weight ``ridge``, mean unpenalized) to episodes ``:fit``."""
    if not 2 <= fit <= len(y) - 2:
        raise ValueError(f"--fit must leave at least 2 episodes on each side of {len(y)}, got {fit}")
    xm, ym = x[:fit].mean(axis=0), y[:fit].mean()
    xc = x[:fit] - xm
    coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ (y[:fit] - ym))
    predicted = ym + (x[fit:] - xm) @ coef
    return float(spearmanr(predicted, y[fit:]).statistic)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each with an episodes.jsonl)")
    p.add_argument("--fit", type=int, default=200, help="episodes the regression is fitted to; the rest are ranked")
    p.add_argument("--ridge", type=float, nargs="+", default=[0.1, 1.0, 10.0], help="ridge weights to try")
    ns = p.parse_args(argv)
    if any(r <= 0 for r in ns.ridge):
        p.error(f"--ridge weights must be positive, got {ns.ridge}")
    print("run | " + " | ".join(f"Spearman, ridge {r:g}" for r in ns.ridge) + " | reward std of the ranked")
    for run in ns.runs:
        x, y = read_log(run)
        try:
            ranks = [held_out_rank(x, y, ns.fit, r) for r in ns.ridge]
        except ValueError as e:
            print(f"{run}: {e}", file=sys.stderr)
            return 2
        print(f"{run} | " + " | ".join(f"{v:.2f}" for v in ranks) + f" | {y[ns.fit :].std():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
