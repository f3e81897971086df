"""What the problem layer asks of a worker pool (``haq.parallel``'s Ray pool, which lives below
and knows nothing of searches): to be closed, and to run work on the workload its workers hold."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

T = TypeVar("T")


class WorkerPool(Protocol):
    """Workers that each hold the problem's workload; a problem's evaluators run on them too."""

    workers: int

    def map_workload(
        self, fn: Callable[..., T], args: Sequence[tuple[Any, ...]], done: Callable[[int], None] | None = None
    ) -> list[T]:
        """``fn(workload, *a)`` for each ``a`` of ``args`` on the workers, results in order (``fn``
        a module-level function: it travels by name); ``done`` hears each call's index as it finishes."""
        ...

    def close(self) -> None: ...


__all__ = ["WorkerPool"]
