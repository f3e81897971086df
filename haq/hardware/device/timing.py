"""The timing loop (steps 3-5, 7 and 8): interleaved rounds of fresh sessions, warm-up, batched
samples, the drift sentinel and bounded re-measurement of noisy models."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnxruntime as ort

from haq.core.types import Log
from haq.hardware.device.guard import DEFAULT_MAX_INPUT_ELEMENTS, Refusal, check_model
from haq.hardware.device.journal import SessionJournal, model_digest
from haq.hardware.device.measurement import Measurement, floors_agree, session_floor
from haq.hardware.device.profile import realized_kernels
from haq.hardware.device.session import open_session, random_feeds, run_once, session_options
from haq.hardware.device.settings import ProtocolConfig


def measure_models(
    models: Sequence[bytes],
    cfg: ProtocolConfig,
    sentinel: bytes | None = None,
    progress: Log | None = None,
    deadline: float | None = None,
    max_input_elements: int = DEFAULT_MAX_INPUT_ELEMENTS,
    journal: SessionJournal | None = None,
) -> list[Measurement]:
    """Time every model with the protocol, interleaved, re-measuring noisy ones (those whose
    samples spread more than ``cfg.max_noise`` and whose floor, with the early stop on, has not
    been seen twice anyway).

    With an opened ``journal``, the interleaved rounds record every session as it is timed and
    reuse those an interrupted attempt recorded (re-measurements of noisy models are not
    journaled: they are the short tail of a batch).

    Every model (and the sentinel) must pass :func:`~haq.hardware.device.guard.check_model`
    first, and no input may declare more than ``max_input_elements`` elements. ``deadline`` is
    a ``time.monotonic()`` value; passing it raises a ``timeout`` :class:`Refusal` between
    runs, so a caller with a time limit is never stuck for longer than one run.
    """
    if not models:
        return []
    for model in [*models, *([sentinel] if sentinel is not None else [])]:
        check_model(model)
    limits = _Limits(deadline, max_input_elements)
    kernels = [realized_kernels(m, cfg, max_input_elements) for m in models]
    results = _interleaved(models, kernels, cfg, sentinel, progress, limits, journal)
    for attempt in range(2, cfg.max_retries + 2):
        noisy = [i for i, m in enumerate(results) if m.noise > cfg.max_noise and not settled(m.session_floors, cfg)]
        if not noisy:
            break
        if progress:
            progress(f"re-measuring {len(noisy)} noisy model(s) (attempt {attempt}/{cfg.max_retries + 1})")
        again = _interleaved([models[i] for i in noisy], [kernels[i] for i in noisy], cfg, sentinel, progress, limits)
        for i, new in zip(noisy, again):
            best = new if new.noise < results[i].noise else results[i]
            results[i] = Measurement(best.samples_ms, best.runs_per_sample, best.kernels, best.wall_s, attempt, best.sentinel_ms)
    return results


def settled(session_floors: Sequence[float], cfg: ProtocolConfig) -> bool:
    """Whether a model has been sampled enough: ``cfg.min_sessions`` sessions or more and its two
    lowest session floors within ``cfg.ci_rel`` of each other (the floor its latency is has been
    seen twice: :mod:`~haq.hardware.device.measurement`). Never before the minimum; never with
    ``ci_rel`` 0 (then every model gets ``cfg.sessions``)."""
    if cfg.ci_rel <= 0 or len(session_floors) < cfg.min_sessions:
        return False
    return floors_agree(session_floors, cfg.ci_rel)


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
    limits: _Limits,
    journal: SessionJournal | None = None,
) -> list[Measurement]:
    """Steps 3-5 and 8 for a list of models: rounds of fresh sessions in rotated order.

    Each round gives every model still sampled one session (round-robin, so drift hits all
    alike); with ``cfg.ci_rel`` set, a model leaves after ``cfg.min_sessions`` rounds once
    its floor has been seen twice (:func:`settled`), and at ``cfg.sessions`` at most.
    Sessions ``journal`` holds count as timed: round r times only the models with r sessions or
    fewer, so an interrupted batch catches up and goes on as it would have.
    """
    n = len(models)
    digests = [model_digest(m) for m in models]
    known = journal.sessions if journal is not None else {}
    samples: list[list[tuple[float, ...]]] = [[s for s, _ in known.get(d, [])][: cfg.sessions] for d in digests]
    batches: list[list[int]] = [[k for _, k in known.get(d, [])][: cfg.sessions] for d in digests]
    walls = [0.0] * n
    sentinel_ms: list[float] = list(journal.sentinel_ms) if journal is not None else []
    use_sentinel = sentinel is not None and cfg.sentinel_every > 0
    active = [i for i in range(n) if not _sampled_enough(samples[i], cfg)]
    reused = sum(len(s) for s in samples)
    if reused and progress and journal is not None:
        progress(f"protocol: reusing {reused} session(s) an interrupted batch timed ({journal.path})")
    if active:
        _warm_machine(models[active[0]], cfg, limits)
    for rnd in range(cfg.sessions):
        due = [i for i in active if len(samples[i]) <= rnd]
        for pos in range(len(due)):
            if use_sentinel and pos % cfg.sentinel_every == 0:
                median = float(np.median(_time_session(sentinel, cfg, limits)[0]))
                sentinel_ms.append(median)
                if journal is not None:
                    journal.record_sentinel(median)
            i = due[(pos + rnd) % len(due)]
            start = time.perf_counter()
            got, k = _time_session(models[i], cfg, limits)
            walls[i] += time.perf_counter() - start
            samples[i].append(tuple(got))
            batches[i].append(k)
            if journal is not None:
                journal.record(digests[i], got, k)
        if progress and due:
            progress(f"protocol: session {rnd + 1}/{cfg.sessions} done for {len(due)} model(s)")
        active = [i for i in active if not _sampled_enough(samples[i], cfg)]
        if not active:
            break
    return [Measurement(tuple(samples[i]), tuple(batches[i]), kernels[i], walls[i], 1, tuple(sentinel_ms)) for i in range(n)]


def _sampled_enough(samples: Sequence[Sequence[float]], cfg: ProtocolConfig) -> bool:
    """A model needs no more sessions: it has ``cfg.sessions`` or its floor is settled."""
    return len(samples) >= cfg.sessions or settled([session_floor(s) for s in samples], cfg)


def _warm_machine(model: bytes, cfg: ProtocolConfig, limits: _Limits) -> None:
    """Run ``model`` untimed for ``cfg.batch_warmup_s`` seconds (nothing when 0)."""
    if cfg.batch_warmup_s > 0:
        _open_and_warm(model, cfg, limits, 0, cfg.batch_warmup_s)


def _open_and_warm(
    model: bytes, cfg: ProtocolConfig, limits: _Limits, runs: int, seconds: float
) -> tuple[ort.InferenceSession, dict[str, np.ndarray], list[float]]:
    """A fresh session of ``model``, its seeded feeds, and the seconds of each of its first runs:
    at least ``runs`` of them and ``seconds`` in all, stopping at the deadline."""
    sess = open_session(model, session_options(cfg))
    feeds = random_feeds(sess, cfg.seed, limits.max_input_elements)
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < runs or time.perf_counter() - start < seconds:
        _check_deadline(limits.deadline)
        warm.append(run_once(sess, feeds))
    return sess, feeds, warm


def _time_session(model: bytes, cfg: ProtocolConfig, limits: _Limits) -> tuple[list[float], int]:
    """One fresh session: warm up (step 4), then ``repeats`` batched samples (step 5)."""
    deadline = limits.deadline
    sess, feeds, warm = _open_and_warm(model, cfg, limits, max(cfg.warmup_runs, 1), cfg.warmup_s)
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


@dataclass(frozen=True)
class _Limits:
    deadline: float | None
    max_input_elements: int


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise Refusal("timeout", "measurement stopped: its time limit passed")
