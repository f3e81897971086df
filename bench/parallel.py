"""Parallel evaluation: evaluations per minute with 1 and 2 workers, the serial fraction, and the
speed-up Amdahl's law then implies for larger pools.

The speed-up is printed two ways: the ratio of each configuration's median run to the reference's,
and, per repeat, the ratio of the two runs made in that repeat (median and range over repeats). The
configurations run interleaved, so the second cancels a drift of a shared machine's speed between
repeats; its range says how far one invocation can be trusted.

Each worker count runs the same proposer end to end (``haq search`` by default, or the random
baseline) with the full evaluator, through ``make_problem(workers=N)``: 1 worker evaluates
in-process without Ray, N > 1 on N Ray actors that each load the workload once. Evaluations
per minute count the whole run (agent training, checkpoints, Ray's overhead), not the pool's
start-up (Ray and the actors start once per run, before the first episode) nor one-time imports:
before a run is timed its driver and each worker evaluate one policy, because a process's first
optimizer imports ``torch._dynamo`` (1.4 s here), which would otherwise land in the first
evaluation of a 2-worker run and the agent's construction of a 1-worker one.

With more than one worker an off-policy agent makes each batch's update while the next batch is
scored (``AgentConfig.overlap_updates``, :mod:`haq.search.overlap`); ``--no-overlap`` adds a run
on the largest worker count without it, so the gain is measured in the same invocation.

The serial fraction is measured two ways:

* Karp-Flatt: from the measured speed-up S on p = 2 workers, e = (1/S − 1/p) / (1 − 1/p),
  everything that did not parallelize (driver work and the pool's overhead) as one number;
* driver: the share of the 1-worker run's wall time spent outside evaluation (proposing,
  training the agent, writing checkpoints), timed directly.

Amdahl's speed-up at N workers is 1 / (e + (1 − e)/N), printed for 8, 64 and 512 with both
fractions: the driver's (what the design leaves serial) and Karp-Flatt's (everything that did
not scale on this machine, CPU contention from other processes included). With the updates
overlapped and a core of its own, the driver's work for a batch of N (N × its per-episode share
d) runs while the batch is scored, so a batch takes the longer of the two and the speed-up is
min(N / (1 − d), 1 / d), also printed: the same ceiling, 1 / d, reached at fewer workers.

What the machine allows is measured in the same run, once per repeat: N forked processes, no Ray,
no driver, each making the same float training steps of the workload's model (the arithmetic a
full evaluation is made of: the DQ fine-tune and the attacks are forward and backward passes),
started together at a barrier, against one process alone. Their throughput ratio is the most any
N-worker search could reach here (cores shared with neighbours, caches and memory bandwidth
shared between the two processes); the search's speed-up is printed as a share of it.

    python bench/parallel.py                       # digits CNN, RL search, 24 episodes per run, 3 repeats
    python bench/parallel.py --proposer random --episodes 40
    python bench/parallel.py --episodes 48 --no-overlap
    python bench/parallel.py --decision layer      # the per-layer agent (the default is a portfolio here)
    python bench/parallel.py --redraws 8           # the objective agent draws repeating proposals again
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from haq.baselines import BaselineConfig, run_baseline
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.problem.problem import Scored, SearchProblem
from haq.quant import QuantPolicy
from haq.search.config import DECISIONS, AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.workload import WorkloadConfig

SCALES = (8, 64, 512)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Timed:
    """Wraps a problem's ``score_many`` to add up the time spent evaluating."""

    def __init__(self, problem: SearchProblem) -> None:
        self.seconds = 0.0
        self._inner = problem.score_many

    def __call__(self, policies: Sequence[QuantPolicy]) -> list[Scored]:
        start = time.perf_counter()
        try:
            return self._inner(policies)
        finally:
            self.seconds += time.perf_counter() - start


def warm_up(problem: SearchProblem, workers: int) -> None:
    """An optimizer made in this process and, on a pool, one uncached evaluation on each worker:
    what a process pays once (its first optimizer's imports) is then paid before the clock starts."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    if problem.pool is None:
        return
    from haq.parallel.ray_pool import RayPool  # Ray is needed only with workers

    pool = problem.pool
    if isinstance(pool, RayPool):
        uniform = problem.policy([(problem.config.max_bits, problem.config.max_bits)] * len(problem.layer_names))
        pool.evaluate_many(problem.config.evaluation.kind, [uniform] * workers)


def _steps(model: nn.Module, batch: torch.Tensor, steps: int, start: Barrier | None) -> float:
    """Seconds for ``steps`` SGD steps of ``model`` on ``batch`` (one warm-up step first, then
    ``start``'s barrier, so concurrent processes time the same stretch)."""
    torch.set_num_threads(1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    model(batch).sum().backward()
    if start is not None:
        start.wait()
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        model(batch).sum().backward()
        opt.step()
    return time.perf_counter() - t


def _child(model: nn.Module, batch: torch.Tensor, steps: int, start: Barrier, out: Queue[float]) -> None:
    out.put(_steps(model, batch, steps, start))


def machine_ceiling(model: nn.Module, input_shape: Sequence[int], workers: int, seconds: float) -> float:
    """Throughput of ``workers`` forked processes making float training steps of ``model`` at once,
    relative to one process alone (each timing about ``seconds`` of steps): what this machine
    gives that many independent workers. ``model`` itself is left as it was (a copy trains)."""
    model = copy.deepcopy(model)
    ctx = mp.get_context("fork")  # the children inherit the copy; nothing is pickled
    batch = torch.randn((32, *input_shape), generator=torch.Generator().manual_seed(0))
    probe = 5
    steps = max(probe, round(seconds / _steps(model, batch, probe, None) * probe))
    times: list[list[float]] = []
    for n in (1, workers):
        start, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_child, args=(model, batch, steps, start, out)) for _ in range(n)]
        for proc in procs:
            proc.start()
        times.append([out.get() for _ in procs])
        for proc in procs:
            proc.join()
    return workers * times[0][0] / max(times[1])


def run_once(
    env: EnvConfig,
    proposer: str,
    episodes: int,
    seed: int,
    workers: int,
    out: Path,
    overlap: bool | None = None,
    decision: str = AgentConfig().decision,
    redraws: int = AgentConfig().redraws,
) -> tuple[float, float, int]:
    """(wall seconds of the run, seconds inside evaluation, evaluations) with ``workers`` workers;
    a search's agent decides as ``decision`` says and draws repeats again ``redraws`` times. Each
    run estimates its sensitivity afresh (no cache), as a user's first run on a model does."""
    problem = make_problem(env, log=log, workers=workers, sensitivity_cache=False)
    try:
        warm_up(problem, workers)
        timed = _Timed(problem)
        problem.score_many = timed  # type: ignore[method-assign]
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        if proposer == "search":
            agent = AgentConfig(
                warmup_episodes=max(episodes // 4, 2), overlap_updates=overlap, decision=decision, redraws=redraws
            )
            cfg = SearchConfig(env=env, agent=agent, episodes=episodes, seed=seed)
            result = run_search(cfg, problem, out)
        else:
            result = run_baseline(BaselineConfig(method="random", evaluations=episodes, seed=seed), problem, out)
        wall = time.perf_counter() - start
    finally:
        problem.close()
    return wall, timed.seconds, result.episodes_done


def _median_run(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    """The run of median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda t: t[0])[(len(runs) - 1) // 2]


def paired_speedups(reference: list[tuple[float, float, int]], runs: list[tuple[float, float, int]]) -> list[float]:
    """Each repeat's rate against the reference's rate in the same repeat: the two ran seconds to
    minutes apart, so a drift of the machine's speed between repeats cancels, which a ratio of
    medians taken from different repeats does not do."""
    return [(e / w) / (e0 / w0) for (w0, _, e0), (w, _, e) in zip(reference, runs)]


def amdahl(serial: float, n: int) -> float:
    """Speed-up on ``n`` workers of a job whose fraction ``serial`` does not parallelize."""
    return 1.0 / (serial + (1.0 - serial) / n)


def overlapped(driver: float, n: int) -> float:
    """Speed-up on ``n`` workers when the driver's share ``driver`` runs, on a core of its own, while
    each batch is scored: a batch takes the longer of its scoring and ``n`` episodes' driver work."""
    return min(n / (1.0 - driver), 1.0 / driver) if 0.0 < driver < 1.0 else float(n)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits_cnn", help="zoo model")
    p.add_argument("--evaluator", default="full", choices=("cheap", "full"), help="evaluator (the target is stated for full)")
    p.add_argument("--proposer", default="search", choices=("search", "random"), help="RL search or the random baseline")
    p.add_argument("--episodes", type=int, default=24, help="evaluations per run")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run (the first is the reference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--decision",
        default=AgentConfig().decision,
        choices=DECISIONS,
        help="the search agent's decision (haq search --decision; auto: a portfolio on the full evaluator's reward)",
    )
    p.add_argument(
        "--redraws",
        type=int,
        default=AgentConfig().redraws,
        help="an objective agent's repeating proposals drawn again up to this many times (haq search's [search.agent] redraws)",
    )
    p.add_argument("--no-overlap", action="store_true", help="add a run on the most workers without overlapped updates")
    p.add_argument("--repeats", type=int, default=3, help="runs of each configuration, interleaved; the median is reported")
    p.add_argument("--out", default="runs/bench-parallel", help="run directories")
    p.add_argument(
        "--ceiling-seconds",
        type=float,
        default=3.0,
        help="seconds of float training steps timed per process for the machine's ceiling (0: skip)",
    )
    ns = p.parse_args(argv)
    if ns.repeats < 1:
        p.error(f"--repeats must be >= 1, got {ns.repeats}")
    if ns.redraws < 0:
        p.error(f"--redraws must be >= 0 (0: never), got {ns.redraws}")
    if not ns.ceiling_seconds >= 0:
        p.error(f"--ceiling-seconds must be >= 0 (0 skips the machine's ceiling), got {ns.ceiling_seconds}")
    torch.set_num_threads(1)
    env = EnvConfig(workload=WorkloadConfig(model=ns.model), evaluation=EvalConfig(kind=ns.evaluator))
    # trains and caches the float model outside the timed runs
    workload = make_problem(env, log=log, sensitivity_cache=False).workload
    plan: list[tuple[int, bool | None]] = [(n, None) for n in ns.workers]
    if ns.no_overlap and ns.proposer == "search":
        plan.append((max(ns.workers), False))
    labels = [f"{n}" if overlap is None else f"{n}, updates not overlapped" for n, overlap in plan]
    timings: list[list[tuple[float, float, int]]] = [[] for _ in plan]
    most = max(ns.workers)
    ceilings: list[float] = []
    for r in range(ns.repeats):  # the configurations interleaved, so the machine's drift hits them alike
        if ns.ceiling_seconds > 0 and most > 1:  # what the machine allows, in the same repeat
            log(f"machine: float training steps in 1 and in {most} processes at once, repeat {r + 1} of {ns.repeats}")
            ceilings.append(machine_ceiling(workload.model, workload.data.input_shape, most, ns.ceiling_seconds))
        for i, ((n, overlap), label) in enumerate(zip(plan, labels)):
            log(f"{ns.proposer}: {ns.episodes} evaluations on {label} worker(s), repeat {r + 1} of {ns.repeats}")
            out = Path(ns.out) / f"w{n}-{overlap}"
            timings[i].append(run_once(env, ns.proposer, ns.episodes, ns.seed, n, out, overlap, ns.decision, ns.redraws))
    rows = []
    for label, runs in zip(labels, timings):
        wall, inside, evals = _median_run(runs)
        rows.append((label, wall, inside, evals))
    if ns.repeats > 1:
        for label, runs in zip(labels, timings):
            log(f"{label} worker(s): wall " + " / ".join(f"{w:.1f}" for w, _, _ in runs) + " s")
        if ceilings:
            log("machine's ceiling: " + " / ".join(f"{c:.2f}×" for c in ceilings))
    n0, wall0, inside0, evals0 = rows[0]
    rate0 = evals0 / wall0 * 60
    proposer = f"search (decision {ns.decision}, redraws {ns.redraws})" if ns.proposer == "search" else ns.proposer
    print(f"{ns.model}, {ns.evaluator} evaluator, {proposer}, {ns.episodes} evaluations per run, median of {ns.repeats}\n")
    print("| workers | wall (s) | evaluations / min | speed-up | speed-up within a repeat: median [range] | in evaluation (s) |")
    print("|---|---|---|---|---|---|")
    for (label, wall, inside, evals), runs in zip(rows, timings):
        within = paired_speedups(timings[0], runs)
        spread = f"{statistics.median(within):.2f}× [{min(within):.2f}, {max(within):.2f}]"
        print(f"| {label} | {wall:.1f} | {evals / wall * 60:.1f} | {evals / wall * 60 / rate0:.2f}× | {spread} | {inside:.1f} |")
    if ceilings:
        ceiling = statistics.median(ceilings)
        print(
            f"\nmachine's ceiling for {most} workers ({most} processes making float training steps of {ns.model} at once "
            f"against one alone, no Ray): {ceiling:.2f}× [{min(ceilings):.2f}, {max(ceilings):.2f}]"
        )
        if plan[0][0] == 1:
            for ((n, _), label), runs in zip(zip(plan, labels), timings):
                if n == most:  # each repeat's speed-up against the ceiling measured in that repeat
                    shares = [s / c for s, c in zip(paired_speedups(timings[0], runs), ceilings)]
                    spread = f"median {statistics.median(shares):.0%} [{min(shares):.0%}, {max(shares):.0%}]"
                    print(f"{label} worker(s): speed-up within a repeat as a share of that repeat's ceiling, {spread}")
    driver = 1.0 - inside0 / wall0
    print(f"\nserial fraction, driver work in the {n0}-worker run: {driver:.3f}")
    print("Amdahl speed-up with it: " + ", ".join(f"{k} workers {amdahl(driver, k):.1f}×" for k in SCALES))
    if ns.proposer == "search":
        print("with the agent's updates overlapped: " + ", ".join(f"{k} workers {overlapped(driver, k):.1f}×" for k in SCALES))
    for (n, _), (_, wall, _, evals) in zip(plan[1:], rows[1:]):
        s = (evals / wall * 60) / rate0
        e = (1 / s - 1 / n) / (1 - 1 / n)
        print(f"serial fraction, Karp-Flatt from the {n}-worker speed-up {s:.2f}×: {e:.3f} (includes CPU contention)")
        print("Amdahl speed-up with it: " + ", ".join(f"{k} workers {amdahl(min(max(e, 0.0), 1.0), k):.1f}×" for k in SCALES))
    load = os.getloadavg()
    print(
        f"\nload average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} CPUs; "
        "other processes' load takes cores from the workers"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
