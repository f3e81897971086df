"""Evaluating policies on several workers at once.

``spec`` (:class:`WorkerSpec`: what a worker needs to rebuild the workload and its evaluators
without retraining or re-reading any name) is plain data; ``ray_pool`` (:class:`RayPool`) keeps
N Ray actors that each load the workload once and evaluate batches of policies. Ray is an
optional dependency (the ``[all]`` extra): only ``ray_pool`` imports it, and one worker never
needs it (the evaluators run in-process); :func:`start_pool` imports it when a pool is asked for.
"""

from haq.parallel.spec import WorkerSpec, worker_evaluators, worker_spec
from haq.parallel.start import start_pool

__all__ = ["WorkerSpec", "start_pool", "worker_evaluators", "worker_spec"]
