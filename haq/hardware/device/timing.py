"""The timing loop (steps 3-5, 7 and 8): interleaved rounds of fresh sessions, warm-up, batched
samples, the drift sentinel and bounded re-measurement of noisy models."""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from haq.core.errors import DeviceError
from haq.core.types import Log
from haq.hardware.device.measurement import Measurement
from haq.hardware.device.profile import realized_kernels
from haq.hardware.device.session import open_session, random_feeds, run_once, session_options
from haq.hardware.device.settings import ProtocolConfig


def measure_models(
    models: Sequence[bytes],
    cfg: ProtocolConfig,
    sentinel: bytes | None = None,
    progress: Log | None = None,
    deadline: float | None = None,
) -> list[Measurement]:
    """Time every model with the protocol, interleaved, re-measuring noisy ones.

    ``deadline`` is a ``time.monotonic()`` value; passing it raises :class:`DeviceError`
    between runs, so a caller with a time limit is never stuck for longer than one run.
    """
    if not models:
        return []
    kernels = [realized_kernels(m, cfg) for m in models]
    results = _interleaved(models, kernels, cfg, sentinel, progress, deadline)
    for attempt in range(2, cfg.max_retries + 2):
        noisy = [i for i, m in enumerate(results) if m.noise > cfg.max_noise]
        if not noisy:
            break
        if progress:
            progress(f"re-measuring {len(noisy)} noisy model(s) (attempt {attempt}/{cfg.max_retries + 1})")
        again = _interleaved([models[i] for i in noisy], [kernels[i] for i in noisy], cfg, sentinel, progress, deadline)
        for i, new in zip(noisy, again):
            best = new if new.noise < results[i].noise else results[i]
            results[i] = Measurement(best.samples_ms, best.runs_per_sample, best.kernels, best.wall_s, attempt, best.sentinel_ms)
    return results


def runs_per_sample(per_run_ms: float, min_repeat_ms: float) -> int:
    """Back-to-back runs in one sample so that it lasts at least ``min_repeat_ms``."""
    if per_run_ms <= 0 or not math.isfinite(per_run_ms):
        return 1
    return max(1, math.ceil(min_repeat_ms / per_run_ms))


def _interleaved(
    models: Sequence[bytes],
    kernels: Sequence[tuple[str, ...]],
    cfg: ProtocolConfig,
    sentinel: bytes | None,
    progress: Log | None,
    deadline: float | None,
) -> list[Measurement]:
    """Steps 3-5 and 8 for a list of models: rounds of fresh sessions in rotated order."""
    n = len(models)
    samples: list[list[tuple[float, ...]]] = [[] for _ in range(n)]
    batches: list[list[int]] = [[] for _ in range(n)]
    walls = [0.0] * n
    sentinel_ms: list[float] = []
    use_sentinel = sentinel is not None and cfg.sentinel_every > 0
    for rnd in range(cfg.sessions):
        for pos in range(n):
            if use_sentinel and pos % cfg.sentinel_every == 0:
                sentinel_ms.append(float(np.median(_time_session(sentinel, cfg, deadline)[0])))
            i = (pos + rnd) % n
            start = time.perf_counter()
            got, k = _time_session(models[i], cfg, deadline)
            walls[i] += time.perf_counter() - start
            samples[i].append(tuple(got))
            batches[i].append(k)
        if progress:
            progress(f"protocol: session {rnd + 1}/{cfg.sessions} done for {n} model(s)")
    return [Measurement(tuple(samples[i]), tuple(batches[i]), kernels[i], walls[i], 1, tuple(sentinel_ms)) for i in range(n)]


def _time_session(model: bytes, cfg: ProtocolConfig, deadline: float | None) -> tuple[list[float], int]:
    """One fresh session: warm up (step 4), then ``repeats`` batched samples (step 5)."""
    sess = open_session(model, session_options(cfg))
    feeds = random_feeds(sess, cfg.seed)
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < max(cfg.warmup_runs, 1) or time.perf_counter() - start < cfg.warmup_s:
        _check_deadline(deadline)
        warm.append(run_once(sess, feeds))
    per_run_ms = float(np.median(warm[-max(cfg.warmup_runs, 1) :])) * 1e3
    k = runs_per_sample(per_run_ms, cfg.min_repeat_ms)
    out: list[float] = []
    for _ in range(cfg.repeats):
        _check_deadline(deadline)
        t0 = time.perf_counter()
        for _ in range(k):
            sess.run(None, feeds)
        out.append((time.perf_counter() - t0) * 1e3 / k)
    return out, k


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeviceError("measurement stopped: its time limit passed")
