"""The DQ fine-tune's learning rate, chosen per workload before a search.

The full evaluator fine-tunes every policy for a few batches with Adam, whose steps have about
the same size whatever a weight's scale, so one rate does not suit every model: on the digits MLP
1e-3 lowered the very accuracy the fine-tune is there to recover and made one policy's reward
swing by 0.5 (std) with the evaluator's seed, where 3e-4 recovered more with a third of that
noise; on the digits CNN 1e-3 recovered more than 3e-4. With ``EvalConfig.finetune_lrs`` the
rate is measured instead of guessed: every candidate fine-tunes the same probe policies under the
same evaluator seeds, on the search's own images, and the one whose fine-tuned policies score the
highest mean accuracy reward (clean and robust terms at the reward's weights) is the rate the
search uses. The choice is a deterministic function of the model, the images and the settings,
so it is kept by their digest (:func:`finetune_lr_key`) and a later run reuses it.

Probe policies: per-layer widths drawn at random (a fixed seed) from the lowest four widths the
search may give, where a fine-tune matters most and the search spends its budget; a pinned first
and last layer keep their pin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from haq.core import config as serial
from haq.core.errors import DivergedError
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import build_evaluator
from haq.evaluation.metrics import ReferenceMetrics
from haq.problem.config import EnvConfig
from haq.problem.pool import WorkerPool
from haq.problem.reward import accuracy_term
from haq.problem.sensitivity_store import tensor_digest, workload_identity
from haq.quant import QuantPolicy
from haq.tables.protocols import DeviceTable
from haq.workload import Workload

PROBES = 3
"""Probe policies each candidate rate fine-tunes."""
PROBE_SEED = 0
"""Seeds the probe policies' widths."""
PROBE_WIDTHS = 4
"""Probe widths come from the lowest this many the search may give."""
EVALUATOR_SEEDS = (401, 402, 403)
"""The evaluator seeds (fine-tune batches, calibration, attack starts) every candidate is measured
under: the same for every run, apart from the pick's and the reports' seeds."""
TRAIN_DIGESTED = 1024
"""The fine-tune draws its batches from the whole training split; the key holds its size and a
digest of its first this many images."""
KEY_FORMAT = 1
"""Bumped when the probes or the score change, so no choice made the old way is reused."""
ZERO = ReferenceMetrics(0.0, 0.0)
"""Candidates are compared under one evaluator seed at a time on the same images, so the float
reference's terms are the same constant for all of them: scores leave it out."""


@dataclass(frozen=True)
class LrChoice:
    """What :func:`choose_finetune_lr` measured: the chosen rate and each candidate's mean
    accuracy reward (the float reference's constant left out) over the probes and seeds."""

    lr: float
    scores: dict[float, float]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (rates as strings: JSON keys)."""
        return {"lr": self.lr, "scores": {repr(k): v for k, v in self.scores.items()}}


class LrStore(Protocol):
    """Where choices are kept by :func:`finetune_lr_key` (a directory of files, in practice)."""

    def get(self, key: str) -> LrChoice | None:
        """The choice kept under ``key``, or ``None``."""
        ...

    def put(self, key: str, choice: LrChoice) -> None:
        """Keep ``choice`` under ``key`` (best effort)."""
        ...


def needs_choice(cfg: EnvConfig) -> bool:
    """Whether ``cfg`` asks for a rate to be chosen: candidates given, and an evaluator that fine-tunes."""
    ev = cfg.evaluation
    return bool(ev.finetune_lrs) and ev.fine_tunes


def built_from(built: EnvConfig, asked: EnvConfig) -> bool:
    """Whether a problem whose config is ``built`` was built from ``asked``: the same, or ``asked``
    with its fine-tune rate chosen from its candidates (:func:`resolve_finetune_lr`)."""
    if built == asked:
        return True
    ev, rate = asked.evaluation, built.evaluation.finetune_lr
    if not needs_choice(asked) or rate not in ev.finetune_lrs:
        return False
    return built == dataclasses.replace(asked, evaluation=dataclasses.replace(ev, finetune_lr=rate, finetune_lrs=()))


def probe_policies(cfg: EnvConfig, layer_names: list[str]) -> list[QuantPolicy]:
    """The :data:`PROBES` policies every candidate rate fine-tunes (see the module docstring)."""
    rng = np.random.default_rng(PROBE_SEED)
    top = min(cfg.max_bits, cfg.min_bits + PROBE_WIDTHS - 1)
    policies = []
    for _ in range(PROBES):
        pairs = []
        for i, name in enumerate(layer_names):
            w, a = (int(b) for b in rng.integers(cfg.min_bits, top + 1, size=2))
            if cfg.pin_first_last is not None and i in (0, len(layer_names) - 1):
                w = a = cfg.pin_first_last
            pairs.append((name, (w, a)))
        policies.append(QuantPolicy.from_pairs(pairs))
    return policies


def choose_finetune_lr(
    cfg: EnvConfig, workload: Workload, table: DeviceTable, pool: WorkerPool | None = None, log: Log | None = None
) -> LrChoice:
    """Fine-tune the probe policies with each of ``cfg.evaluation.finetune_lrs`` under every
    seed of :data:`EVALUATOR_SEEDS` on the search's images; the rate with the highest mean
    accuracy reward wins (ties: the earlier candidate). The fine-tunes run on ``pool``'s workers
    when one is given (each is one task), else here, one after the other; ``log`` hears the
    progress after every candidate's worth of them. A rate whose fine-tune diverges is left
    out; when every one does, one :class:`~haq.core.errors.DivergedError` line says so."""
    lrs = cfg.evaluation.finetune_lrs
    probes = [p.to_dict() for p in probe_policies(cfg, workload.layer_names)]
    tasks = [(table, cfg, lr, seed, probe) for lr in lrs for seed in EVALUATOR_SEEDS for probe in probes]
    per_rate = len(EVALUATOR_SEEDS) * len(probes)
    start, finished = time.perf_counter(), set[int]()

    def heard(i: int) -> None:
        finished.add(i)
        if log and len(finished) % per_rate == 0:
            took = time.perf_counter() - start
            log(f"choosing the DQ fine-tune's rate: {len(finished)}/{len(tasks)} fine-tunes done ({took:.0f} s)")

    if pool is not None and pool.workers > 1:
        results = pool.map_workload(probe_score, tasks, heard)
    else:
        results = []
        for i, task in enumerate(tasks):
            results.append(probe_score(workload, *task))
            heard(i)
    scores: dict[float, float] = {}
    for k, lr in enumerate(lrs):
        values = [v for v in results[k * per_rate : (k + 1) * per_rate] if v is not None]
        if len(values) == per_rate:
            scores[lr] = statistics.mean(values)
    if not scores:
        raise DivergedError(
            f"the DQ fine-tune diverged at every candidate learning rate ({', '.join(f'{lr:g}' for lr in lrs)}); give lower ones"
        )
    best = max(scores, key=lambda lr: (scores[lr], -lrs.index(lr)))
    return LrChoice(best, scores)


def probe_score(
    workload: Workload, table: DeviceTable, cfg: EnvConfig, lr: float, seed: int, probe: dict[str, object]
) -> float | None:
    """One probe's accuracy reward after a fine-tune at ``lr`` under the evaluator seed ``seed``;
    ``None`` when the fine-tune diverged. Module level: a pool's worker runs it on its own workload."""
    seeded = dataclasses.replace(workload, config=dataclasses.replace(workload.config, seed=seed))
    ev = build_evaluator(seeded, table, _candidate(cfg.evaluation, lr))
    try:
        return accuracy_term(ev.evaluate(QuantPolicy.from_dict(probe)), ZERO, cfg.reward)
    except DivergedError:
        return None


def _candidate(ev: EvalConfig, lr: float) -> EvalConfig:
    return dataclasses.replace(ev, kind="full", finetune_lr=lr, finetune_lrs=())


def finetune_lr_key(cfg: EnvConfig, workload: Workload) -> str:
    """The digest a choice for ``workload`` under ``cfg`` is kept by: the float model, the search's
    images, the evaluator's settings but its rate, the reward's weights and the width range."""
    x, y = workload.data.subset("val", cfg.evaluation.val_samples)
    tx, ty = workload.data.subset("train", TRAIN_DIGESTED)
    settings = serial.to_dict(dataclasses.replace(cfg.evaluation, kind="full", finetune_lr=1.0))
    doc = {
        "format": KEY_FORMAT,
        **workload_identity(workload),
        "images": tensor_digest([("x", x), ("y", y)]),
        "train": [len(workload.data.train), tensor_digest([("x", tx), ("y", ty)])],  # type: ignore[arg-type]
        "evaluation": settings,
        "reward": serial.to_dict(cfg.reward),
        "widths": [cfg.min_bits, cfg.max_bits, cfg.pin_first_last],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


def resolve_finetune_lr(
    cfg: EnvConfig,
    workload: Workload,
    table: DeviceTable,
    store: LrStore | None = None,
    log: Log | None = None,
    pool: WorkerPool | None = None,
    recorded: float | None = None,
) -> EnvConfig:
    """``cfg`` with the fine-tune's rate chosen (:func:`choose_finetune_lr`, on ``pool`` when one
    is given, or kept in ``store``) and written into ``evaluation.finetune_lr``, the candidates
    cleared; ``cfg`` itself when it asks for no choice (:func:`needs_choice`). ``recorded``: the
    rate a resumed run was chosen with, kept when it is a candidate, so a run never continues at
    another rate than it began with (a cleared cache, another machine's float arithmetic)."""
    if not needs_choice(cfg):
        return cfg
    lrs = cfg.evaluation.finetune_lrs
    if len(lrs) == 1:
        choice = LrChoice(lrs[0], {})
    elif recorded in lrs:
        choice = LrChoice(recorded, {})
        if log:
            log(f"DQ fine-tune learning rate {recorded:g} (the rate the resumed run began with)")
    else:
        key = finetune_lr_key(cfg, workload)
        kept = store.get(key) if store is not None else None
        if kept is not None and kept.lr in lrs:
            choice = kept
            if log:
                log(f"DQ fine-tune learning rate {choice.lr:g} (chosen for this model before; kept in the cache)")
        else:
            start = time.perf_counter()
            if log:
                n = len(lrs) * PROBES * len(EVALUATOR_SEEDS)
                where = f" on {pool.workers} workers" if pool is not None and pool.workers > 1 else ""
                among = ", ".join(f"{lr:g}" for lr in lrs)
                log(f"choosing the DQ fine-tune's learning rate among {among} ({n} fine-tunes{where})")
            choice = choose_finetune_lr(cfg, workload, table, pool, log)
            if log:
                said = ", ".join(f"{lr:g} {s:+.3f}" for lr, s in choice.scores.items())
                took = time.perf_counter() - start
                log(f"DQ fine-tune learning rate {choice.lr:g} (mean accuracy reward: {said}; {took:.0f} s)")
            if store is not None:
                store.put(key, choice)
    evaluation = dataclasses.replace(cfg.evaluation, finetune_lr=choice.lr, finetune_lrs=())
    return dataclasses.replace(cfg, evaluation=evaluation)


__all__ = [
    "EVALUATOR_SEEDS",
    "PROBES",
    "LrChoice",
    "LrStore",
    "built_from",
    "choose_finetune_lr",
    "finetune_lr_key",
    "needs_choice",
    "probe_policies",
    "probe_score",
    "resolve_finetune_lr",
]
