"""The measurement record: raw samples of one model, and the robust statistics derived from them.

Raw samples are what crosses the network and what a cache stores; every statistic is a
property recomputed from them, so a record read back is never trusted for more than its data.

The latency is a floor, not a median (:attr:`Measurement.latency_ms`). Why: a shared machine
changes speed while it runs. On this 2-core virtual machine one onnxruntime session of the
digits MLP, timed for 1 s in 10 ms chunks, ran at 22 µs per call in some chunks and 33-34 µs in
others, switching every 10-100 ms, pinned to either core alike; session medians of one model
fell into two modes 1.4-1.6x apart (digits MLP 18-20 / 27-31 µs, digits CNN 11-12 / 16-19 µs,
ResNet-20 285-290 / 410-430 µs), in proportions that differ by model. A median over 3-10
sessions lands in either mode. ``bench/session_spread.py`` splits 24 sessions of a model into
two measurements of at most 10, each stopped by its rule, and compares them: on three random
policies each of the digits MLP, the digits CNN and ResNet-20 (and the probe and the drift
sentinel), the median of session medians (protocol version 2) agreed within ±5 % in 15-92 % of
draws after 9.0-10.0 sessions; each session's 10th-percentile sample (its floor: the speed
when the machine did not slow it), taking the second-lowest floor over sessions (one lucky
session cannot set it) and stopping once the two lowest agree, in 86-100 % after 3.3-4.9
sessions. A later, noisier run (four digits CNN policies, the probe and the sentinel): 59-80 %
against 12-50 % within ±5 %, 94-98 % against 28-81 % within ±10 %. A table's entries and the
whole-model times it is checked against are both floors, so they describe the same machine
state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from haq.core.errors import DeviceError

FLOOR_PERCENTILE = 10.0
"""Percentile of a session's samples taken as its floor. Low enough that a session which spent
part of its time in the machine's fast state shows it, high enough that a few lucky samples
cannot (50 samples per session by default: the 5th-6th fastest)."""


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
        """Median of the per-session medians (ms): the typical speed, which on a machine that
        changes speed moves between measurements; a description, not the latency."""
        return float(np.median(self.session_medians))

    @property
    def session_floors(self) -> tuple[float, ...]:
        """Each session's floor (ms, :func:`session_floor`)."""
        return tuple(session_floor(s) for s in self.samples_ms)

    @property
    def latency_ms(self) -> float:
        """The latency (ms): the second-lowest session floor (the only one of a single session),
        so one lucky session cannot set it (module docstring: why a floor)."""
        return second_lowest(self.session_floors)

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
            "latency_ms": self.latency_ms,
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "noise": self.noise,
            "session_medians_ms": list(self.session_medians),
            "session_floors_ms": list(self.session_floors),
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


def session_floor(samples: Sequence[float]) -> float:
    """A session's floor: the :data:`FLOOR_PERCENTILE` percentile of its samples."""
    return float(np.percentile(np.asarray(samples, dtype=np.float64), FLOOR_PERCENTILE))


def second_lowest(values: Sequence[float]) -> float:
    """The second-smallest of ``values`` (the only one of a single value)."""
    if not values:
        raise DeviceError("no values to take the second-lowest of")
    ordered = sorted(values)
    return float(ordered[1] if len(ordered) > 1 else ordered[0])


def floors_agree(floors: Sequence[float], rel: float) -> bool:
    """Whether the two lowest of ``floors`` lie within ``rel`` of each other: the floor has been
    seen twice, so a third session is not needed to trust it."""
    if len(floors) < 2:
        return False
    lowest, second = sorted(floors)[:2]
    return second <= lowest * (1.0 + rel)


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
