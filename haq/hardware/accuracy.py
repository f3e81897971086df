"""How well a cost predictor matches measured latencies: the statistics ``haq tables check`` reports.

Pure numerics on two equal-length lists (predicted ms, measured ms); nothing here times or
reads a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

from haq.core.errors import InternalError


@dataclass(frozen=True)
class Accuracy:
    """How well predictions match measurements: share within ±5 % and ±10 %, RMSPE, rank correlation."""

    n: int
    within5: float
    within10: float
    rmspe: float
    spearman: float

    def row(self, label: str) -> str:
        """One markdown table row."""
        return (
            f"| {label} | {self.n} | {100 * self.within5:.0f} % | {100 * self.within10:.0f} % "
            f"| {100 * self.rmspe:.1f} % | {self.spearman:.2f} |"
        )


def accuracy(pred: Sequence[float], meas: Sequence[float]) -> Accuracy:
    """All statistics of one predictor."""
    return Accuracy(len(meas), within(pred, meas, 0.05), within(pred, meas, 0.10), rmspe(pred, meas), spearman(pred, meas))


def within(pred: Sequence[float], meas: Sequence[float], tol: float) -> float:
    """Share of predictions within ``±tol`` (relative) of the measurement."""
    p, m = _arrays(pred, meas)
    return float(np.mean(np.abs(p / m - 1.0) <= tol + 1e-12))


def rmspe(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Root mean squared percentage error, as a fraction."""
    p, m = _arrays(pred, meas)
    return float(np.sqrt(np.mean(((p - m) / m) ** 2)))


def spearman(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Spearman rank correlation (ties averaged); ``nan`` when either side is constant."""
    p, m = _arrays(pred, meas)
    if len(p) < 2 or np.all(p == p[0]) or np.all(m == m[0]):
        return float("nan")
    return float(spearmanr(p, m).statistic)


def _arrays(pred: Sequence[float], meas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as arrays; tables and the protocol only ever produce finite, positive times."""
    p, m = np.asarray(pred, dtype=float), np.asarray(meas, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or len(p) == 0:
        raise InternalError(f"predictions and measurements must be equal-length non-empty lists, got {p.shape} and {m.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m)) and np.all(m > 0)):
        raise InternalError("predictions must be finite and measurements finite and positive")
    return p, m
