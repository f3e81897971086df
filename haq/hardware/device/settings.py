"""The measurement protocol's settings: one frozen, validated config shared by host and device.

The wire format (what a remote request carries as ``protocol``) is the JSON object of the
fields, written and read by :mod:`haq.core.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from haq.core import validate
from haq.core.config import to_dict
from haq.hardware.device.measurement import FLOOR_PERCENTILE

SESSIONS = 10
"""Most fresh sessions a model gets by default. Why 10, not 5: once a session cost 0.1 s instead
of 0.5 s (the batch warm-up below), runs of ``bench/tables.py`` on this shared 2-core machine had
retest ceilings within ±10 % of 56-100 % over eight networks with at most 5 sessions and 94-100 %
on two runs with at most 10 (``latency_tables/README.md``, "Faster builds")."""

PROTOCOL_VERSION = 3
"""2: ``batch_warmup_s`` (an agent of version 1 refuses it as an unknown field). 3: the latency is
the second-lowest session floor and the early stop waits for the two lowest floors to agree
(:mod:`haq.hardware.device.measurement`); version 2 took the median of session medians and
stopped on a confidence interval of their mean. The fields are unchanged, so an agent of
version 2 still serves (its early stop is the old one; the host computes the latency from the
samples either way)."""


@dataclass(frozen=True)
class ProtocolConfig:
    """How to time a model; the defaults are what ``haq tables build --device cpu`` uses now (a table
    records the protocol that built it in ``meta.protocol``).

    The early stop (``ci_rel`` 0.02 after ``min_sessions`` 3): a model leaves once the two lowest
    of its session floors agree within 2 % (the floor its latency is has been seen twice); on
    24-session timings of three policies each of three networks, split in two (``bench/session_spread.py``),
    that took 3.3-4.9 sessions and the two halves agreed within ±5 % in 86-100 % of draws
    (59-80 % on a later, noisier run; :mod:`haq.hardware.device.measurement`).

    The warm-up (0.5 s once per batch, then 0.05 s and 10 runs per session, against 0.5 s per
    session before; ``bench/warmup.py``): a pass over ResNet-20's 21 one-layer models took 11.9 s
    against 99.3 s, over 24 whole-model policies 23.2 s against 107.6 s, and the two protocols'
    medians disagreed (RMS, level divided out) by 4.3 % and 3.7 % against 2.9-3.1 % and 3.3-4.5 %
    between two passes of one protocol (``latency_tables/README.md``, "Faster builds").

    sessions: fresh inference sessions per model (rounds, interleaved across models); the most
        a model gets when ``ci_rel`` stops sampling early.
    ci_rel: stop sampling a model once its two lowest session floors are within this fraction
        of each other (0 = off: every model gets ``sessions``).
    min_sessions: sessions a model gets before ``ci_rel`` may stop it (no early stop when
        ``sessions`` is smaller). A noisy model (``max_noise``) whose floor has settled is not
        re-measured.
    warmup_runs / warmup_s: a session is warmed up for at least this many runs and seconds.
    batch_warmup_s: before the first round of a batch, the first model runs untimed this long:
        the CPU's clock and caches warm up once per batch, a session only needs its own first
        runs (allocations, weight packing) behind it.
    repeats: timed samples per session.
    min_repeat_ms: a sample batches enough runs to last at least this long.
    max_noise: IQR / median above which a model is measured again.
    max_retries: bound on those re-measurements.
    sentinel_every: measure the drift sentinel after every N models in a round (0 = never).
    seed: seed of the random inputs.
    threads: onnxruntime intra-op threads (1 keeps a shared machine quiet).
    """

    sessions: int = SESSIONS
    warmup_runs: int = 10
    warmup_s: float = 0.05
    batch_warmup_s: float = 0.5
    repeats: int = 50
    min_repeat_ms: float = 0.2
    max_noise: float = 0.1
    max_retries: int = 1
    sentinel_every: int = 0
    seed: int = 0
    threads: int = 1
    ci_rel: float = 0.02
    min_sessions: int = 3

    def __post_init__(self) -> None:
        validate.count("sessions", self.sessions, 1, 100)
        validate.count("warmup_runs", self.warmup_runs, 0, 100_000)
        validate.finite("warmup_s", self.warmup_s, 0.0, 600.0)
        validate.finite("batch_warmup_s", self.batch_warmup_s, 0.0, 600.0)
        validate.count("repeats", self.repeats, 1, 100_000)
        validate.finite("min_repeat_ms", self.min_repeat_ms, 0.0, 60_000.0)
        validate.finite("max_noise", self.max_noise, 0.0, 100.0)
        validate.count("max_retries", self.max_retries, 0, 100)
        validate.count("sentinel_every", self.sentinel_every, 0, 1_000_000)
        validate.count("seed", self.seed, 0, 2**63 - 1)
        validate.count("threads", self.threads, 1, 1024)
        validate.finite("ci_rel", self.ci_rel, 0.0, 1.0)
        validate.count("min_sessions", self.min_sessions, 2, 100)

    def record(self) -> dict[str, Any]:
        """The full protocol description a table stores in its metadata."""
        return {
            "version": PROTOCOL_VERSION,
            "runtime": "onnxruntime",
            "runtime_version": ort.__version__,
            "provider": "CPUExecutionProvider",
            "intra_op_threads": self.threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "allow_spinning": False,
            "graph_optimization": "all",
            "inputs": f"numpy default_rng({self.seed}); standard normal floats, small integers",
            "order": "fresh session per model per round, round order rotated by one",
            "stopping": (
                f"a model leaves after >= {self.min_sessions} sessions once its two lowest session floors "
                f"are within {self.ci_rel:g} of each other; {self.sessions} sessions at most"
                if self.ci_rel > 0
                else f"{self.sessions} sessions per model"
            ),
            "statistic": (
                f"second-lowest session floor (ms per run); a floor: the {FLOOR_PERCENTILE:g}th percentile of a session's samples"
            ),
            "noise": "IQR / median of all samples",
            **to_dict(self),
        }
