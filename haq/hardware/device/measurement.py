"""The measurement record: raw samples of one model, and the robust statistics derived from them.

Raw samples are what crosses the network and what a cache stores; every statistic is a
property recomputed from them, so a record read back is never trusted for more than its data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from haq.core.errors import DeviceError


@dataclass(frozen=True)
class Measurement:
    """Raw samples of one model and the statistics derived from them.

    samples_ms: per session, the timed samples in ms per run (each the mean of
        ``runs_per_sample[session]`` back-to-back runs).
    kernels: op types of the optimized graph that ran, in execution order.
    wall_s: seconds spent on this model (session creation, warm-up, timing) in the kept attempt.
    attempts: how many times the protocol measured it (> 1 after noisy re-measurements).
    sentinel_ms: medians of the drift sentinel measured during the same batch (may be empty).
    """

    samples_ms: tuple[tuple[float, ...], ...]
    runs_per_sample: tuple[int, ...]
    kernels: tuple[str, ...]
    wall_s: float
    attempts: int = 1
    sentinel_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.samples_ms or any(not s for s in self.samples_ms):
            raise DeviceError("a measurement needs at least one sample in every session")
        if len(self.runs_per_sample) != len(self.samples_ms):
            raise DeviceError(f"runs_per_sample has {len(self.runs_per_sample)} entries for {len(self.samples_ms)} sessions")
        values = [v for s in self.samples_ms for v in s] + list(self.sentinel_ms)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise DeviceError("measured times must be finite and positive")
        if any(k < 1 for k in self.runs_per_sample) or self.attempts < 1 or not self.wall_s >= 0:
            raise DeviceError("runs_per_sample and attempts must be >= 1 and wall_s >= 0")

    @property
    def session_medians(self) -> tuple[float, ...]:
        """Median of each session's samples (ms)."""
        return tuple(float(np.median(s)) for s in self.samples_ms)

    @property
    def median_ms(self) -> float:
        """The latency: median of the per-session medians (ms)."""
        return float(np.median(self.session_medians))

    @property
    def iqr_ms(self) -> float:
        """Interquartile range of all samples (ms)."""
        return iqr(self.all_samples())

    @property
    def noise(self) -> float:
        """IQR / median of all samples: the within-measurement noise."""
        return relative_iqr(self.all_samples())

    @property
    def session_spread(self) -> float:
        """(max - min) / median of the session medians: how far fresh sessions disagree."""
        return relative_range(self.session_medians)

    @property
    def drift(self) -> float:
        """(max - min) / median of the sentinel medians; 0 when no sentinel was measured."""
        return relative_range(self.sentinel_ms) if len(self.sentinel_ms) > 1 else 0.0

    @property
    def n_samples(self) -> int:
        """Number of timed samples over all sessions."""
        return sum(len(s) for s in self.samples_ms)

    def all_samples(self) -> np.ndarray:
        """All samples pooled (ms)."""
        return np.fromiter((v for s in self.samples_ms for v in s), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: raw samples plus the derived statistics (for readers without haq)."""
        return {
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "noise": self.noise,
            "session_medians_ms": list(self.session_medians),
            "session_spread": self.session_spread,
            "n_samples": self.n_samples,
            "drift": self.drift,
            "samples_ms": [list(s) for s in self.samples_ms],
            "runs_per_sample": list(self.runs_per_sample),
            "kernels": list(self.kernels),
            "wall_s": self.wall_s,
            "attempts": self.attempts,
            "sentinel_ms": list(self.sentinel_ms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Rebuild from :meth:`to_dict` output (derived fields are recomputed, not trusted)."""
        try:
            return cls(
                samples_ms=tuple(tuple(float(v) for v in s) for s in data["samples_ms"]),
                runs_per_sample=tuple(int(k) for k in data["runs_per_sample"]),
                kernels=tuple(str(k) for k in data["kernels"]),
                wall_s=float(data["wall_s"]),
                attempts=int(data.get("attempts", 1)),
                sentinel_ms=tuple(float(v) for v in data.get("sentinel_ms", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise DeviceError(f"malformed measurement record ({problem}); expected Measurement.to_dict() output") from exc


def iqr(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile range (linear interpolation)."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q3 - q1)


def relative_iqr(values: Sequence[float] | np.ndarray) -> float:
    """IQR / median: a spread that outliers cannot inflate."""
    med = float(np.median(np.asarray(values, dtype=np.float64)))
    return iqr(values) / med if med > 0 else math.inf


def relative_range(values: Sequence[float] | np.ndarray) -> float:
    """(max - min) / median."""
    arr = np.asarray(values, dtype=np.float64)
    med = float(np.median(arr))
    return float(arr.max() - arr.min()) / med if med > 0 else math.inf
