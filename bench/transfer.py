"""Policy transfer between devices (and models): does a trained agent save search episodes?

For every zoo model in the mode and every shipped device table the model can be searched on
(a table that cannot cost the model, or cannot meet the budget, is listed with the reason):

1. from-scratch DDPG searches on each device, several seeds (``--scratch`` episodes each);
   a device's search with seed s is also the source agent transferred from that device;
2. for each source → target pair and seed: ``haq transfer`` (zero-shot episode 0, then
   ``--finetune`` episodes), logged in its own run directory; by default the transfer first
   learns from its source's evaluations re-priced on the target (same model only:
   :mod:`haq.transfer.experience`), ``--no-reuse`` transfers the agent alone;
3. with ``--cross-model`` modes: each model's agents rolled out on the other model, same device.

``--decision objective`` runs all of it with the agent that sets the sensitivity ILP's objective
(:mod:`haq.search.objective`, SAC as ``haq search --decision objective`` resolves it): scratch
searches, sources and transfers alike, same model only (its actions are one weight per layer of
its model), decoded with the target's costs and without the source's re-priced evaluations.

Printed: the transfer matrix (zero-shot reward, best reward after fine-tuning and the episode
that reached it, the episodes a from-scratch search needs to reach that same reward — median
and range over all scratch seeds, ``>M`` when it never did — and how often transfer needed at
most a quarter of them, with how many misses a zero-shot at the target's best prior rung would
have turned: what a better zero-shot alone can add, and by how many search images' worth of
reward scratch led each miss at four times the transfer's episodes), how well the transfer's
predictor (the source's accuracies, the target's costs) ranks the policies the target's scratch
searches evaluated, then the HAQ-style cross-device latency table: each device's best searched
policy costed on every shipped device, as a ratio to that device's own best policy.

The episode counts exclude the source agent's own training (the agent already exists; that is
the premise of transfer). Rewards are deterministic per policy, so every run of a (model,
device) shares one evaluator cache: it saves time and changes no number. The cheap evaluator
(calibrated PTQ, clean accuracy) scores every policy: the full one (DQ fine-tune + attacks)
costs seconds per policy and would not fit the time budget on 2 cores.

    python bench/transfer.py --quick   # digits CNN, 2 seeds: < 5 min on 2 cores
    python bench/transfer.py           # digits CNN + MLP, 3 seeds, cross-model: < 15 min
    python bench/transfer.py --decision objective   # the same, objective agents, same model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from scipy.stats import spearmanr

import latency_tables
from haq.core.errors import HaqError
from haq.core.fileio import atomic_write_text
from haq.core.types import BitPair
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.accuracy_fit import AccuracyFit
from haq.problem.allocation import estimated_error
from haq.problem.config import EnvConfig, RewardConfig
from haq.problem.problem import SearchProblem
from haq.problem.reward import cost_term, image_reward
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.search.rungs import RUNG, centre_at, centre_fraction
from haq.tables.compare import cost_on_device
from haq.transfer.agent import ActingEnv, load_on
from haq.transfer.config import ZERO_SHOT_STARTS, TransferConfig
from haq.transfer.run import REUSED, run_transfer
from haq.transfer.source import load_source
from haq.transfer.start import FROM_PREDICTED, STARTED_FROM, accuracy_fit
from haq.workload import WorkloadConfig


@dataclass(frozen=True)
class Mode:
    """What one benchmark invocation covers."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    scratch_episodes: int
    finetune_episodes: int
    cross_model: bool


MODES = {
    "quick": Mode(("digits_cnn",), (0, 1), 40, 5, cross_model=False),
    "full": Mode(("digits_cnn", "digits_mlp"), (0, 1, 2), 50, 8, cross_model=True),
}
# The benchmark pins its agent, so its numbers do not move with the search's defaults. With one
# gradient step per collected step (the search's first default) DDPG's and TD3's deterministic
# actors scored below the best random warm-up episode after 60 episodes on the digits CNN:
# nothing worth transferring. TD3 with 16 gradient steps per episode learns within 40-60
# episodes and runs twice as fast as SAC with 32; every scratch search (hence every source
# agent) uses it. ``--agent`` / ``--gradient-steps`` rerun it with other settings.
AGENT = AgentConfig(algo="td3", warmup_episodes=10, gradient_steps=16, decision="layer")
OBJECTIVE_AGENT = AgentConfig(decision="objective")
"""``--decision objective``'s agent: ``haq search --decision objective``'s defaults."""
AGENTS = {AGENT.decision: AGENT, OBJECTIVE_AGENT.decision: OBJECTIVE_AGENT}
EVALUATION = EvalConfig(kind="cheap")
ONE_IMAGE = image_reward(RewardConfig(), EVALUATION.val_samples)
"""The reward one search image is worth (one more image right, at HAQ's accuracy weight): the
scale of the misses, which the benchmark prints in these units."""
DEFAULT_START = TransferConfig(source="-", table="-").zero_shot


@dataclass(frozen=True)
class Pair:
    """One source → target transfer with one seed, and what it achieved."""

    source_model: str
    source_table: str
    target_model: str
    target_table: str
    seed: int
    zero_shot: float
    reused: int  # source evaluations re-priced on the target and learned from before the zero-shot episode
    predicted: bool  # the zero-shot policy was the allocation predicted best, not the best reused one
    best: float
    best_at: int  # episodes the transfer run used to reach ``best`` (zero-shot episode = 1)
    seconds: float


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def env_config(model: str, table: str) -> EnvConfig:
    return EnvConfig(workload=WorkloadConfig(model=model), table=table, evaluation=EVALUATION)


def build_problems(models: tuple[str, ...]) -> tuple[dict[tuple[str, str], SearchProblem], dict[tuple[str, str], str]]:
    """One problem per (model, table); the reason for each pair that cannot be searched."""
    problems, skipped = {}, {}
    for model in models:
        for table in latency_tables.available():
            try:
                problems[(model, table)] = make_problem(env_config(model, table), log=log)
            except HaqError as exc:
                skipped[(model, table)] = str(exc).split("; add it with")[0]
    return problems, skipped


def best_so_far(records: list[EpisodeRecord]) -> list[float]:
    out: list[float] = []
    for r in records:
        out.append(max(out[-1], r.reward) if out else r.reward)
    return out


def episodes_to_reach(curve: list[float], target: float) -> int | None:
    """Episodes (1-based) a run needed until its best reward reached ``target``; None if never."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-9), None)


def episodes_needed(curve: list[float], target: float, horizon: int) -> int:
    """:func:`episodes_to_reach`, with a run that never got there counted as needing more than its
    whole ``horizon`` (``horizon + 1``): what the quarter rule compares against."""
    return episodes_to_reach(curve, target) or horizon + 1


def scratch(
    mode: Mode,
    agent: AgentConfig,
    problems: dict[tuple[str, str], SearchProblem],
    root: Path,
) -> dict[tuple[str, str, int], Path]:
    runs = {}
    for (model, table), problem in problems.items():
        for seed in mode.seeds:
            out = root / model / f"scratch-{table}-s{seed}"
            cfg = SearchConfig(env=problem.config, agent=agent, episodes=mode.scratch_episodes, seed=seed)
            start = time.perf_counter()
            result = run_search(cfg, problem, out, resume=RunDir(out).exists())
            log(
                f"scratch {model}/{table} s{seed}: best {result.best.reward:+.4f} at episode {result.best.episode} "
                f"({time.perf_counter() - start:.0f} s)"
            )
            runs[(model, table, seed)] = out
    return runs


def transfers(
    mode: Mode,
    problems: dict[tuple[str, str], SearchProblem],
    sources: dict[tuple[str, str, int], Path],
    root: Path,
    noise: float,
    reuse: bool,
    zero_shot: str,
    sink: Callable[[Pair], None],
) -> None:
    for (src_model, src_table, seed), source in sources.items():
        for (tgt_model, tgt_table), problem in problems.items():
            cross_device = tgt_model == src_model and tgt_table != src_table
            cross_model = mode.cross_model and tgt_model != src_model and tgt_table == src_table
            if cross_model and load_source(source).config.agent.decision == OBJECTIVE_AGENT.decision:
                continue  # one weight per layer of its own model: refused on another
            if not (cross_device or cross_model):
                continue
            out = root / tgt_model / f"transfer-{src_model}-{src_table}-to-{tgt_table}-s{seed}{variant(reuse, zero_shot)}"
            cfg = TransferConfig(
                source=str(source),
                table=tgt_table,
                model=tgt_model if cross_model else None,
                episodes=mode.finetune_episodes,
                seed=seed,
                noise_sigma=noise,
                reuse_source=reuse,
                zero_shot=zero_shot,
            )
            start = time.perf_counter()
            run_transfer(cfg, problem, out, resume=RunDir(out).exists())
            records = RunDir(out).read_episodes()
            curve = best_so_far(records)
            at = episodes_to_reach(curve, curve[-1])
            sink(
                Pair(
                    src_model,
                    src_table,
                    tgt_model,
                    tgt_table,
                    seed,
                    records[0].reward,
                    int(records[0].extra.get(REUSED, 0)),
                    records[0].extra.get(STARTED_FROM) == FROM_PREDICTED,
                    curve[-1],
                    at or len(curve),
                    time.perf_counter() - start,
                )
            )


def variant(reuse: bool, zero_shot: str) -> str:
    """The suffix of a variant's run directories and results file ('' for the default transfer)."""
    if not reuse:
        return "-alone"
    return "" if zero_shot == DEFAULT_START else f"-{zero_shot.replace('_', '-')}"


def _span(values: Iterable[int]) -> str:
    lo, hi = min(values, default=0), max(values, default=0)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _fmt_needed(shown: list[int], horizon: int) -> str:
    med = statistics.median(shown)
    text = f"{med:.0f}" if med <= horizon else f">{horizon}"
    lo, hi = min(shown), max(shown)
    rng = f"{lo}-{hi}" if hi <= horizon else f"{lo}->{horizon}"
    return f"{text} ({rng})" if lo != hi else text


def matrix(
    mode: Mode, pairs: list[Pair], curves: dict[tuple[str, str], list[list[float]]], rungs: dict[tuple[str, str], int]
) -> tuple[str, dict[str, Any]]:
    """The transfer matrix as Markdown, and the overall quarter-target tally: with the misses in
    which scratch matched the transfer's reward within its prior rungs (``rungs``: how many the
    target's scratch runs evaluated first), which a transfer can only meet at its first episode,
    by how much scratch led each miss at four times the transfer's episodes (``leads``, in
    :data:`ONE_IMAGE` units), and the misses whose zero-shot reward alone was within the quarter
    (``missed_late``: scratch needed at least four episodes for it; a later, better policy of the
    transfer then raised the reward scratch had to reach faster than the transfer's episodes), and
    the comparisons in which a quarter was possible at all (``possible``: scratch needed at least
    four episodes for the transfer's reward; below that a quarter of scratch's episodes is less
    than the transfer's first)."""
    lines = [
        f"| source → target | source evals reused | zero-shot predicted | zero-shot reward | scratch eps to match zero-shot "
        f"| reward after {mode.finetune_episodes} fine-tune eps "
        f"| transfer eps used | scratch eps to match | transfer ≤ ¼ of scratch | scratch best after {mode.scratch_episodes} eps "
        "| transfer reached it |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    met = total = at_rungs = late = possible = 0
    leads: list[float] = []
    keys = sorted(
        {(p.source_model, p.source_table, p.target_model, p.target_table) for p in pairs}, key=lambda k: (k[0] != k[2], k)
    )
    for key in keys:
        rows = [p for p in pairs if (p.source_model, p.source_table, p.target_model, p.target_table) == key]
        target_curves = curves[(key[2], key[3])]
        compared = [(p, c) for p in rows for c in target_curves]  # transfer seed x scratch seed
        need_zero = [episodes_needed(c, p.zero_shot, mode.scratch_episodes) for p, c in compared]
        need_best = [episodes_needed(c, p.best, mode.scratch_episodes) for p, c in compared]
        quarter = [p.best_at <= n / 4 for (p, _), n in zip(compared, need_best)]
        scratch_best = [c[-1] for c in target_curves]
        reached = [p.best >= b - 1e-9 for p in rows for b in scratch_best]
        met += sum(quarter)
        total += len(quarter)
        at_rungs += sum(not q and n <= rungs[(key[2], key[3])] for q, n in zip(quarter, need_best))
        late += sum(not q and 4 <= z for q, z in zip(quarter, need_zero))
        possible += sum(4 <= n for n in need_best)
        leads += [(c[min(len(c), 4 * p.best_at) - 1] - p.best) / ONE_IMAGE for (p, c), q in zip(compared, quarter) if not q]
        label = f"{key[0]}/{key[1]} → {key[2]}/{key[3]}" if key[0] != key[2] else f"{key[0]}: {key[1]} → {key[3]}"
        lines.append(
            f"| {label} | {statistics.mean(p.reused for p in rows):.1f} | {sum(p.predicted for p in rows)}/{len(rows)} "
            f"| {statistics.mean(p.zero_shot for p in rows):+.3f} | {_fmt_needed(need_zero, mode.scratch_episodes)} "
            f"| {statistics.mean(p.best for p in rows):+.3f} | {statistics.mean(p.best_at for p in rows):.1f} "
            f"| {_fmt_needed(need_best, mode.scratch_episodes)} | {sum(quarter)}/{len(quarter)} "
            f"| {statistics.mean(scratch_best):+.3f} | {sum(reached)}/{len(reached)} |"
        )
    tally = {
        "quarter_met": met,
        "comparisons": total,
        "missed_at_rungs": at_rungs,
        "missed_late": late,
        "possible": possible,
        "leads": leads,
    }
    return "\n".join(lines), tally


def rung_ceiling(
    mode: Mode, pairs: list[Pair], curves: dict[tuple[str, str], list[list[float]]], rung_best: dict[tuple[str, str], list[float]]
) -> int:
    """Comparisons within the quarter had every transfer's zero-shot episode scored its target's
    best prior rung whenever that rung beat the transfer's own best (``rung_best``: each scratch
    run's best rung, in ``curves``' order), the fine-tuning adding nothing: what a better zero-shot
    could add, counted without evaluating anything. A counterfactual, not an upper bound (from a
    better start the fine-tuning might move on)."""
    met = 0
    for p in pairs:
        key = (p.target_model, p.target_table)
        for curve, rung in zip(curves[key], rung_best[key]):
            best, at = (rung, 1) if rung > p.best + 1e-12 else (p.best, p.best_at)
            met += at <= episodes_needed(curve, best, mode.scratch_episodes) / 4
    return met


def latency_table(model: str, problems: dict[tuple[str, str], SearchProblem], sources: dict[tuple[str, str, int], Path]) -> str:
    """HAQ's table: the best policy searched for device X (rows) costed on device Y (columns)."""
    tables = {t: problems[(model, t)].table for (m, t) in problems if m == model}
    shipped = [latency_tables.load(name) for name in latency_tables.available()]
    layers = next(p.workload.layers for (m, _), p in problems.items() if m == model)
    tuned = {}
    for table in tables:
        records = [r for (m, t, _), path in sources.items() if m == model and t == table for r in RunDir(path).read_episodes()]
        tuned[table] = max(records, key=lambda r: (r.reward, -r.episode)).quant_policy()
    costs = {x: {y.name: cost_on_device(layers, policy, y) for y in shipped} for x, policy in tuned.items()}
    lines = [
        f"| {model}: tuned for ↓ / run on → | " + " | ".join(t.name for t in shipped) + " |",
        "|---|" + "---|" * len(shipped),
    ]
    for x in tuned:
        cells = []
        for y in shipped:
            c = costs[x][y.name]
            own = costs[y.name][y.name].latency_ms if y.name in costs else None
            if c.latency_ms is None:
                cells.append("n/a")
                continue
            ratio = f"{c.latency_ms / own:.2f}× " if own else ""
            promoted = f" ({len(c.promoted)} promoted)" if c.promoted else ""
            cells.append(f"{ratio}{c.latency_ms:.4g} ms{promoted}")
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def source_quality(mode: Mode, problems: dict[tuple[str, str], SearchProblem], sources: dict[tuple[str, str, int], Path]) -> str:
    """How good each transferred agent is at home: its deterministic actor on its own device (in
    the frame it was trained in: centred on its centre rung) against its search's best and its best rung."""
    lines = [
        "| model / device | seed | actor on its own device | search best | best prior rung (its budget fraction) |",
        "|---|---|---|---|---|",
    ]
    for (model, table, seed), path in sources.items():
        records = RunDir(path).read_episodes()
        source = load_source(path)
        fraction = centre_fraction(records, source.config.agent, source.config.env, str(path))
        problem = problems[(model, table)] if fraction is None else centre_at(problems[(model, table)], fraction)
        acting = ActingEnv.build(problem, source.config.agent.for_problem(problem.prior is not None))
        actor = acting.rollout(load_on(source.checkpoint, acting.env), 0).reward
        rungs = [r.reward for r in records if RUNG in r.extra]
        rung = f"{max(rungs):+.3f} ({fraction:.3f})" if rungs and fraction is not None else "none"
        lines.append(f"| {model} / {table} | {seed} | {actor:+.3f} | {max(r.reward for r in records):+.3f} | {rung} |")
    return "\n".join(lines)


TOP_PREDICTED = 5
"""How many of the policies predicted best :func:`rank_agreement` looks among for the best exact reward."""


def rank_agreement(predicted: list[float], exact: list[float]) -> tuple[float, float, float]:
    """Spearman's rank correlation of ``predicted`` with ``exact`` (NaN when either is constant),
    the best exact reward among the :data:`TOP_PREDICTED` predicted best, and the best of all."""
    top = sorted(range(len(predicted)), key=lambda i: predicted[i])[-TOP_PREDICTED:]
    rho = float(spearmanr(predicted, exact).statistic) if len(set(predicted)) > 1 and len(set(exact)) > 1 else math.nan
    return rho, max(exact[i] for i in top), max(exact)


def prediction_quality(
    problems: dict[tuple[str, str], SearchProblem], logs: dict[tuple[str, str], list[list[EpisodeRecord]]]
) -> str:
    """How well a source search's evaluations predict its target's rewards, on the same model
    (``logs``: each (model, device)'s scratch runs, one record list per seed).

    The predictor is the transfer's own (:func:`haq.transfer.start.accuracy_fit`: the source's
    accuracies as a non-increasing function of the estimated error, and the target table's exact
    cost), scored against the exact rewards of the distinct policies the target's scratch runs
    evaluated (those within the fit's range). Why: a transfer could only screen its fine-tuning
    proposals by a predictor that ranks the target's policies; this says whether it does."""
    lines = [
        f"| model: source → target | policies scored (of all) | Spearman ρ, median over source seeds (range) "
        f"| best exact among the {TOP_PREDICTED} predicted best (median) | best exact |",
        "|---|---|---|---|---|",
    ]
    for (model, tgt), problem in problems.items():
        if problem.sensitivity is None:
            continue
        target = _distinct_policies(problem, logs[(model, tgt)])
        for src in sorted(t for m, t in logs if m == model and t != tgt):
            rows = []
            for records in logs[(model, src)]:
                fit = accuracy_fit(problem, records)
                scored = [] if fit is None else _predicted(problem, fit, target)
                if scored:
                    rows.append((len(scored), *rank_agreement([a for a, _ in scored], [b for _, b in scored])))
            if not rows:
                continue
            rhos = [r[1] for r in rows if not math.isnan(r[1])]
            rho = f"{statistics.median(rhos):+.2f} ({min(rhos):+.2f}..{max(rhos):+.2f})" if rhos else "n/a"
            lines.append(
                f"| {model}: {src} → {tgt} | {min(r[0] for r in rows)}-{max(r[0] for r in rows)} (of {len(target)}) "
                f"| {rho} | {statistics.median(r[2] for r in rows):+.3f} | {rows[0][3]:+.3f} |"
            )
    return "\n".join(lines)


def _distinct_policies(problem: SearchProblem, runs: list[list[EpisodeRecord]]) -> dict[tuple[BitPair, ...], EpisodeRecord]:
    """Each distinct policy the ``runs`` evaluated on ``problem``'s device, with its first record."""
    out: dict[tuple[BitPair, ...], EpisodeRecord] = {}
    for records in runs:
        for r in records:
            pairs = r.pairs(problem.layer_names)
            if pairs is not None:
                out.setdefault(pairs, r)
    return out


def _predicted(
    problem: SearchProblem, fit: AccuracyFit, policies: dict[tuple[BitPair, ...], EpisodeRecord]
) -> list[tuple[float, float]]:
    """(predicted, exact) reward of each policy whose estimated error the fit covers."""
    if problem.sensitivity is None:
        return []
    out = []
    for pairs, record in policies.items():
        accuracy = fit.predict(estimated_error(problem.sensitivity, dict(zip(problem.layer_names, pairs))))
        if accuracy is not None:
            out.append((accuracy - cost_term(record.metrics, problem.budget, problem.config.reward), record.reward))
    return out


def pair_json(p: Pair) -> dict[str, Any]:
    return dict(p.__dict__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="digits CNN only, 2 seeds, shorter searches (< 5 min)")
    p.add_argument(
        "--decision",
        choices=sorted(AGENTS),
        default=AGENT.decision,
        help="what the agents decide: one layer per step (td3) or the ILP's objective (sac, same-model transfers only; "
        "default --out gets an '-objective' suffix)",
    )
    p.add_argument("--agent", default=None, help="agent of the scratch searches, hence of the transferred agents")
    p.add_argument("--gradient-steps", type=int, default=None, help="gradient steps per episode (-1: one per step)")
    p.add_argument(
        "--noise",
        type=float,
        default=TransferConfig(source="-", table="-").noise_sigma,
        help="initial exploration noise of the fine-tuning",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds of the scratch searches and transfers (default: the mode's)"
    )
    p.add_argument(
        "--no-reuse",
        action="store_true",
        help="transfer the agents alone: no replay of the source's evaluations re-priced on the target "
        "(run directories and results get an '-alone' suffix, so both variants share the scratch searches)",
    )
    p.add_argument(
        "--zero-shot",
        choices=ZERO_SHOT_STARTS,
        default=DEFAULT_START,
        help="with reuse: the zero-shot policy is the allocation predicted best on the target (when it beats the best "
        "reused policy's reward) or always the best reused policy (run directories and results get a suffix)",
    )
    p.add_argument("--out", default=None, help="run directories and results.json (default bench-out/transfer[-quick])")
    ns = p.parse_args(argv)
    torch.set_num_threads(1)
    mode = MODES["quick" if ns.quick else "full"]
    if ns.seeds:
        mode = dataclasses.replace(mode, seeds=tuple(ns.seeds))
    objective = ns.decision == OBJECTIVE_AGENT.decision
    root = Path(ns.out or ("bench-out/transfer" + ("-quick" if ns.quick else "") + ("-objective" if objective else "")))
    start = time.perf_counter()
    problems, skipped = build_problems(mode.models)
    for (model, table), reason in skipped.items():
        log(f"{model} cannot be searched on {table}: {reason}")
    base = AGENTS[ns.decision]
    agent = dataclasses.replace(
        base,
        algo=ns.agent or base.algo,
        gradient_steps=base.gradient_steps if ns.gradient_steps is None else ns.gradient_steps,
    )
    sources = scratch(mode, agent, problems, root)
    scratch_s = time.perf_counter() - start
    logs = {key: [RunDir(path).read_episodes() for (m, t, _), path in sources.items() if (m, t) == key] for key in problems}
    curves = {key: [best_so_far(records) for records in runs] for key, runs in logs.items()}
    rungs = {key: min(sum(RUNG in r.extra for r in records) for records in runs) for key, runs in logs.items()}
    rung_best = {
        key: [max((r.reward for r in records if RUNG in r.extra), default=-float("inf")) for records in runs]
        for key, runs in logs.items()
    }
    pairs: list[Pair] = []

    def sink(pair: Pair) -> None:
        pairs.append(pair)
        doc = {"mode": mode.__dict__, "agent": agent.__dict__, "pairs": [pair_json(x) for x in pairs]}
        atomic_write_text(root / f"results{variant(not ns.no_reuse, ns.zero_shot)}.json", json.dumps(doc, indent=2) + "\n")
        log(
            f"transfer {pair.source_model}/{pair.source_table} → {pair.target_model}/{pair.target_table} s{pair.seed}: "
            f"{pair.reused} source evaluations reused, zero-shot {pair.zero_shot:+.4f}, "
            f"best {pair.best:+.4f} at episode {pair.best_at} ({pair.seconds:.0f} s)"
        )

    transfers(mode, problems, sources, root, ns.noise, not ns.no_reuse, ns.zero_shot, sink)
    text, tally = matrix(mode, pairs, curves, rungs)
    how = (
        "objective agents, decoded with the target's costs"
        if objective
        else "the agent alone"
        if ns.no_reuse
        else f"the agent after the source's evaluations, re-priced on the target (zero-shot: {ns.zero_shot})"
    )
    print(
        f"## transfer matrix: {how} ({agent.for_problem(True).algo}, {agent.gradient_steps} gradient steps / episode, "
        "cheap evaluator; "
        f"seeds {list(mode.seeds)}; scratch searches of {mode.scratch_episodes} episodes)\n"
    )
    print(text)
    print(
        f"\ntransfer reached its reward in <= 1/4 of the scratch episodes in {tally['quarter_met']} of {tally['comparisons']} "
        f"(transfer seed x scratch seed) comparisons; of the {tally['comparisons'] - tally['quarter_met']} misses, "
        f"{tally['missed_at_rungs']} are scratch runs that matched the transfer's reward within their prior rungs "
        f"(the first {_span(rungs.values())} episodes), where the transfer "
        "had to match it at its first"
    )
    if tally["possible"]:
        print(
            f"in {tally['possible']} of the {tally['comparisons']} comparisons scratch needed at least four episodes for the "
            f"transfer's reward, the only ones in which a quarter is not below the transfer's first episode: the transfer "
            f"met the quarter in {tally['quarter_met']} of those ({100 * tally['quarter_met'] / tally['possible']:.0f} %)"
        )
    print(
        f"in {tally['missed_late']} of the misses the zero-shot reward alone was within the quarter (scratch needed at "
        "least four episodes for it): the fine-tuning found a better policy, but not four times faster than scratch did"
    )
    leads = tally["leads"]
    if leads:
        print(
            f"at four times the transfer's episodes, scratch led those misses by a median of "
            f"{statistics.median(leads):.2f} search images' worth of reward ({ONE_IMAGE:.3f} each): "
            f"by at most one image in {sum(v <= 1 + 1e-9 for v in leads)}, at most two in {sum(v <= 2 + 1e-9 for v in leads)}"
        )
    same = [p for p in pairs if p.source_model == p.target_model]
    if same:
        print(
            f"same-model transfers ({len(same)}): mean zero-shot reward {statistics.mean(p.zero_shot for p in same):+.4f}, "
            f"mean best after fine-tuning {statistics.mean(p.best for p in same):+.4f}, "
            f"zero-shot at the predicted allocation in {sum(p.predicted for p in same)}"
        )
    print(
        f"with a zero-shot at the target's best prior rung wherever that rung beat the transfer (and no fine-tuning "
        f"past it): {rung_ceiling(mode, pairs, curves, rung_best)} of {tally['comparisons']}"
    )
    print("\n## what the source's evaluations predict on the target (the transfer's predictor against exact rewards)\n")
    print(prediction_quality(problems, logs))
    print("\n## the transferred agents at home (deterministic actor; a transfer cannot beat its source)\n")
    print(source_quality(mode, problems, sources))
    for model in mode.models:
        print(
            f"\n## cross-device latency, {model} (ratio to the run-on device's own best policy; promoted = run at wider bits)\n"
        )
        print(latency_table(model, problems, sources))
    for (model, table), reason in skipped.items():
        print(f"\nnot searched: {model} on {table}: {reason}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s (scratch searches {scratch_s:.0f} s); runs and results.json in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
