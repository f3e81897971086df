"""N Ray actors that each rebuild the workload once, keep it, and evaluate the policies they are sent.

A batch (:meth:`RayPool.evaluate_many`) is spread over the idle actors, one policy at a time, and
returned in the order it was given, whichever actor finished first: the results do not depend
on the number of workers or on their timing. An actor that dies mid-evaluation (its process
killed, its node lost) is replaced by a fresh one and its policy is evaluated again, so a batch
loses nothing and returns each result once; a policy whose evaluation killed
``max_attempts`` actors in a row is a :class:`DeviceError`.

Without an address the pool starts a private local Ray instance sized to the workers (no
dashboard, worker logs kept out of the driver's output) and stops it on :meth:`RayPool.close`;
``address`` joins an existing cluster instead (``ray start --head`` on some machine). Starting
is bounded in time: a cluster that does not answer is a :class:`DeviceError`, not a hang.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable, Iterator, Sequence, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from haq.core.errors import DeviceError, HaqError
from haq.core.types import Log, quiet
from haq.core.validate import count
from haq.evaluation.config import EvalConfig
from haq.evaluation.evaluators import QuantizingEvaluator
from haq.evaluation.held_out import Images, held_out_evaluator
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.parallel.spec import WorkerSpec, worker_evaluators, worker_workload
from haq.quant import QuantPolicy

START_TIMEOUT_S = 120.0
LOCAL_START_ATTEMPTS = 2
"""How long starting or joining Ray may take before the pool gives up."""
READY_TIMEOUT_S = 900.0
"""How long a new actor may take to rebuild the workload and its float reference."""
T = TypeVar("T")


@ray.remote(num_cpus=1, max_restarts=0)
class EvalWorker:
    """One worker process: the spec's workload and evaluators, built once in ``__init__``; evaluators
    on other images (the final pick's) are built the first time they are asked for, then kept."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._workload = worker_workload(spec)
        self._evaluators = worker_evaluators(spec, self._workload)
        self._held_out: dict[tuple[str, Images, int | None], QuantizingEvaluator] = {}

    def pid(self) -> int:
        """This worker's process id (tests kill it to check recovery)."""
        return os.getpid()

    def reference(self, kind: str, images: Images | None = None, seed: int | None = None) -> dict[str, Any]:
        """The float model's metrics under the evaluator ``kind`` (on ``images``, else the search's;
        seeded ``seed``, else the workload's)."""
        return self._evaluator(kind, images, seed).reference.to_dict()

    def evaluate(
        self, kind: str, policy: dict[str, Any], images: Images | None = None, seed: int | None = None
    ) -> dict[str, Any]:
        """Metrics of one policy (a ``QuantPolicy.to_dict`` document) under the evaluator ``kind``
        (on ``images``, else the search's; seeded ``seed``, else the workload's)."""
        return self._evaluator(kind, images, seed).evaluate(QuantPolicy.from_dict(policy)).to_dict()

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """``fn(workload, *args)`` on this worker's workload: driver work that needs the workload
        but is no evaluation (a share of a measured sensitivity's layers)."""
        return fn(self._workload, *args)

    def configure(self, spec: WorkerSpec) -> None:
        """Evaluate under ``spec`` (the same workload, other evaluator settings) from now on."""
        self._spec = spec
        self._evaluators = worker_evaluators(spec, self._workload)
        self._held_out.clear()

    def _evaluator(self, kind: str, images: Images | None, seed: int | None) -> QuantizingEvaluator:
        if images is None:
            return self._evaluators[kind]
        key = (kind, images, seed)
        if key not in self._held_out:
            spec = self._spec
            self._held_out[key] = held_out_evaluator(self._workload, spec.table, spec.evaluation, kind, images, seed)
        return self._held_out[key]


@dataclass
class _Task:
    index: int
    call: Callable[[Any], Any]
    """Starts the work on an actor, returning its object ref."""
    attempts: int = 0


class RayPool:
    """``workers`` evaluation actors on a local Ray instance or the cluster at ``address``.

    The pool serves every kind in ``spec.kinds``; :meth:`evaluator` gives the
    :class:`~haq.evaluation.evaluators.Evaluator` view of one kind, :meth:`held_out` that of a
    kind measuring on other images (the final pick's).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        workers: int,
        address: str | None = None,
        *,
        max_attempts: int = 3,
        log: Log | None = None,
    ) -> None:
        count("workers", workers)
        count("max_attempts", max_attempts)
        self.spec = spec
        self.workers = workers
        self.max_attempts = max_attempts
        self.replaced = 0
        self._say = log or quiet
        self._owns_ray = start_ray(workers, address, self._say)
        self._actors: list[Any] = []
        self._references: dict[tuple[str, Images | None, int | None], ReferenceMetrics] = {}
        try:
            self._actors = self._spawn(workers)
            for kind in spec.kinds:
                self.reference(kind)
        except BaseException:
            self.close()
            raise

    def evaluator(self, kind: str) -> PoolEvaluator:
        """The evaluator ``kind`` (one of the spec's kinds), evaluated on this pool."""
        if kind not in self.spec.kinds:
            raise DeviceError(f"this worker pool serves the {', '.join(self.spec.kinds)} evaluator(s), not '{kind}'")
        return PoolEvaluator(self, kind)

    def reconfigure(self, evaluation: EvalConfig) -> None:
        """Evaluate under ``evaluation`` from now on, on every worker and on any that replaces one:
        settings that are chosen by work done on the pool itself (the DQ fine-tune's rate,
        :mod:`haq.problem.finetune_lr`). The workload stays; the float references are measured
        again; a worker that dies meanwhile is replaced by one that starts from the new settings."""
        self.spec = dataclasses.replace(self.spec, evaluation=evaluation)
        self._references.clear()
        for slot, ref in enumerate([actor.configure.remote(self.spec) for actor in self._actors]):
            try:
                ray.get(ref)
            except RayActorError:
                self._say(f"worker {slot} died while taking new settings; replacing it")
                self._replace(slot)

    def held_out(self, kind: str, images: Images, seed: int | None = None) -> PoolEvaluator:
        """The evaluator ``kind`` measuring on ``images`` (:mod:`haq.evaluation.held_out`), seeded
        ``seed`` (else the workload's), on this pool; each worker builds it the first time it is
        sent one of its policies."""
        return PoolEvaluator(self, kind, images, seed)

    def reference(self, kind: str, images: Images | None = None, seed: int | None = None) -> ReferenceMetrics:
        """The float reference of the evaluator ``kind`` (on ``images``, else the search's; seeded
        ``seed``, else the workload's), measured by a worker once."""
        key = (kind, images, seed)
        if key not in self._references:
            self._references[key] = ReferenceMetrics(**self._map([lambda actor: actor.reference.remote(kind, images, seed)])[0])
        return self._references[key]

    def pids(self) -> list[int]:
        """The worker processes' ids, in worker order."""
        return [int(p) for p in ray.get([a.pid.remote() for a in self._actors])]

    def actor(self, i: int) -> Any:
        """The ``i``-th actor handle (tests use it to kill a worker)."""
        return self._actors[i]

    def evaluate_many(
        self, kind: str, policies: Sequence[QuantPolicy], images: Images | None = None, seed: int | None = None
    ) -> list[PolicyMetrics]:
        """Metrics of every policy under ``kind`` (on ``images``, else the search's; seeded ``seed``,
        else the workload's), in order; dead workers are replaced and their policy re-run."""

        def call(policy: dict[str, Any]) -> Callable[[Any], Any]:
            return lambda actor: actor.evaluate.remote(kind, policy, images, seed)

        return [PolicyMetrics.from_dict(d) for d in self._map([call(p.to_dict()) for p in policies])]

    def map_workload(
        self, fn: Callable[..., T], args: Sequence[tuple[Any, ...]], done: Callable[[int], None] | None = None
    ) -> list[T]:
        """``fn(workload, *a)`` for each ``a`` of ``args``, spread over the workers as a batch of
        evaluations is (a dead worker replaced and its call made again), results in order; ``done``
        hears each call's index as it finishes. ``fn`` must be a module-level function the workers
        can import: Ray sends it by name."""

        def call(a: tuple[Any, ...]) -> Callable[[Any], Any]:
            return lambda actor: actor.run.remote(fn, a)

        return self._map([call(a) for a in args], done)

    def _map(self, calls: Sequence[Callable[[Any], Any]], done_with: Callable[[int], None] | None = None) -> list[Any]:
        """Each call (an actor -> its remote result) run on an idle actor, results in order; a call
        whose actor died runs again on the actor's replacement; ``done_with`` hears each call's index
        as its result arrives."""
        results: dict[int, Any] = {}
        queue = deque(_Task(i, c) for i, c in enumerate(calls))
        idle = list(range(len(self._actors)))
        running: dict[Any, tuple[int, _Task]] = {}
        while queue or running:
            while queue and idle:
                slot, task = idle.pop(0), queue.popleft()
                running[task.call(self._actors[slot])] = (slot, task)
            done, _ = ray.wait(list(running), num_returns=1)
            slot, task = running.pop(done[0])
            try:
                results[task.index] = ray.get(done[0])
                if done_with is not None:
                    done_with(task.index)
            except RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, HaqError):
                    raise cause from exc
                raise DeviceError(f"a worker failed to evaluate a policy: {exc}") from exc
            except RayActorError as exc:
                task.attempts += 1
                if task.attempts >= self.max_attempts:
                    raise DeviceError(
                        f"{task.attempts} workers in a row died evaluating one policy ({exc.__class__.__name__}); "
                        "check the workers' memory and logs"
                    ) from exc
                self._say(f"worker {slot} died ({exc.__class__.__name__}); replacing it and evaluating its policy again")
                self._replace(slot)
                queue.appendleft(task)
            idle.append(slot)
            idle.sort()
        return [results[i] for i in range(len(calls))]

    def close(self) -> None:
        """Stop the actors, and the local Ray instance when this pool started it."""
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _spawn(self, n: int, replacing: bool = False) -> list[Any]:
        """``n`` new actors, returned once each has built its evaluators (bounded in time). A pool's
        first actors are refused at once when the cluster has fewer free CPUs than that (an actor
        holds one while it lives); a replacement waits for its dead predecessor's CPU."""
        free = float(ray.available_resources().get("CPU", 0.0))
        if not replacing and free < n:
            raise DeviceError(
                f"the Ray cluster has {free:g} free CPU(s) for {n} more evaluation worker(s); "
                "close other pools (problem.close()) or use fewer --workers"
            )
        actors = [EvalWorker.remote(self.spec) for _ in range(n)]  # type: ignore[attr-defined]
        try:
            ray.get([a.pid.remote() for a in actors], timeout=READY_TIMEOUT_S)
        except GetTimeoutError as exc:
            for a in actors:
                ray.kill(a, no_restart=True)
            raise DeviceError(
                f"{n} evaluation worker(s) were not ready after {READY_TIMEOUT_S:.0f} s; is the cluster short of CPUs?"
            ) from exc
        except RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, HaqError):
                raise cause from exc
            raise DeviceError(f"an evaluation worker failed to start: {exc}") from exc
        return actors

    def _replace(self, slot: int) -> None:
        ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._spawn(1, replacing=True)[0]
        self.replaced += 1


class PoolEvaluator:
    """The :class:`~haq.evaluation.evaluators.Evaluator` of one kind (on ``images``, else the
    search's), evaluated on a :class:`RayPool`."""

    def __init__(self, pool: RayPool, kind: str, images: Images | None = None, seed: int | None = None) -> None:
        self._pool = pool
        self.kind = kind
        self.images = images
        self.seed = seed

    @property
    def reference(self) -> ReferenceMetrics:
        """The float model measured by a worker the same way as every policy."""
        return self._pool.reference(self.kind, self.images, self.seed)

    def evaluate(self, policy: QuantPolicy) -> PolicyMetrics:
        """One policy on one worker."""
        return self._pool.evaluate_many(self.kind, [policy], self.images, self.seed)[0]

    def evaluate_many(self, policies: Sequence[QuantPolicy]) -> list[PolicyMetrics]:
        """The policies spread over the workers, results in order."""
        return self._pool.evaluate_many(self.kind, policies, self.images, self.seed)


def start_ray(workers: int, address: str | None, log: Log) -> bool:
    """Join the cluster at ``address``, or start a local instance with one CPU per worker; returns
    whether this call started Ray (and so should stop it). Gives up after :data:`START_TIMEOUT_S`.

    Ray must start on the calling thread (its processes die with the thread that started them),
    so the time limit is an alarm signal, set only where one can be (the main thread).
    """
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = (
        {"address": address}
        if address
        else {
            "num_cpus": workers,
            "include_dashboard": False,
            "configure_logging": False,
        }
    )
    where = f"the Ray cluster at {address}" if address else f"a local Ray instance with {workers} CPUs"
    began = time.perf_counter()
    # A local start gets a second try: on a saturated machine Ray's own internal waits for its
    # control store (a few seconds each) can expire before our overall limit does.
    attempts = 1 if address else LOCAL_START_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            with _time_limit(START_TIMEOUT_S, f"{where} did not start within {START_TIMEOUT_S:.0f} s"):
                ray.init(log_to_driver=False, **kwargs)
            break
        except DeviceError:
            ray.shutdown()
            raise
        except Exception as exc:  # ray raises many types (ConnectionError, RuntimeError, ValueError)
            ray.shutdown()
            first = str(exc).splitlines()[0] if str(exc) else repr(exc)
            if attempt < attempts:
                log(f"{where} failed to start ({first}); trying once more")
                continue
            raise DeviceError(f"could not start {where}: {first}; check `ray status`, or run with --workers 1") from exc
    log(f"started {where} in {time.perf_counter() - began:.1f} s" if address is None else f"joined {where}")
    return address is None


@contextmanager
def _time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise :class:`DeviceError` (``message``) if the block runs past ``seconds`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise DeviceError(message + "; check `ray status`, or run with --workers 1")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
