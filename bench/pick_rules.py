"""Does the final pick's re-score pay? Pick rules compared on a search-quality benchmark's runs.

``haq search`` re-scores a run's top ``k`` distinct policies on held-out images before choosing
one (:mod:`haq.problem.select`), because the highest of hundreds of noisy search rewards is
partly luck. Whether that beats simply taking the search's best depends on how noisy the
held-out images are next to the search's own: this script measures it on finished runs of
``bench/search_quality.py`` (its ``--out`` directories).

For every single-fidelity run (a multi-fidelity run's candidates include policies its pick
promotes, which the log does not hold), the top ``k`` distinct policies by search reward are
scored by the run's judge on both halves of the test split. Each rule chooses among the best
``j`` of them by search reward, cross-fitted (choose on one half, report on the other, both ways
round, the mean):

* ``search-best``: the highest search reward, no re-score (``j`` = 1);
* ``held-out top j`` (``j`` = 2, 3, 5; 5 is haq's pick): the highest reward on the choosing half;
* ``pooled top 5``: the highest image-weighted mean of the search reward and the choosing half's;
* with ``--top K`` above 5, ``held-out top K`` too (``k`` = K candidates scored per run; a scores
  file holds one ``k``, so give each value its own ``--out``).

With ``--rank smoothed`` the candidates are instead the top ``k`` distinct policies by a
smoothed search reward (:func:`smoothed_rewards`: a ridge regression of the run's rewards on each
layer's widths, fitted to the run's own log), re-scored the same way: whether choosing candidates
by what a policy's neighbours scored beats choosing them by their own lucky reward. Both rankings
can share one ``--out``; runs scored under both are compared paired (smoothed held-out top ``k``
minus haq's pick).

With ``--rank repeated`` the candidates are haq's top ``PICK_K`` and then the run's ``REPEATED``
most often proposed distinct policies not among them (:func:`haq.problem.select.pick_candidates`): whether a policy
the agent kept coming back to beats the lucky top of the log when the held-out half decides.
It is compared, per method, against haq's pick among the same line's first ``PICK_K``. With
``--defer D`` as well, the deferring pick (:func:`haq.problem.select.deferring`: the run's most
proposed policy unless the best candidate beats it on the choosing half by more than ``D`` images'
worth) is compared against the held-out pick among those same candidates (the run's log says which
policy is the most proposed).

Printed per model: each rule's mean over runs, per method and overall, and each rule's paired
difference from haq's pick with a 95 % bootstrap interval over runs. Each run's candidate scores
are appended to ``--out`` as they are measured (JSON lines), so a killed invocation resumes where
it stopped.

    python bench/search_quality.py --full --out SQ
    python bench/pick_rules.py SQ [SQ2 ...] --out pick-rules.jsonl
    python bench/pick_rules.py SQ --models digits_cnn --top 10 --out pick-rules-top10.jsonl
    python bench/pick_rules.py SQ --rank smoothed --out pick-rules.jsonl   # beside the search ranking
    python bench/pick_rules.py SQ --rank repeated --out pick-rules.jsonl   # haq's candidates + most repeated
    python bench/pick_rules.py SQ --rank repeated --defer 2 --out pick-rules.jsonl   # ... and deferring to the most proposed
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from search_quality import (
    BOOTSTRAP_DRAWS,
    PICK_K,
    RESULTS,
    Workbench,
    by_workbench,
    read_results,
    run_dir,
    workbench_setting,
)

from haq.core.errors import HaqError
from haq.core.fileio import append_durably, atomic_write_text
from haq.evaluation.evaluators import PolicyKey, policy_key
from haq.evaluation.held_out import Images
from haq.problem.config import RewardConfig
from haq.problem.reward import image_reward
from haq.problem.select import deferring, pick_candidates, settled_among
from haq.quant import QuantPolicy
from haq.runs.rundir import RunDir


@dataclass(frozen=True)
class Rule:
    """How a pick chooses: among the ``top`` best by search reward, by the choosing half's reward
    alone or (``pooled``) by its image-weighted mean with the search reward."""

    name: str
    top: int
    pooled: bool = False


HAQ_PICK = Rule(f"held-out top {PICK_K}", PICK_K)
RULES = (
    Rule("search-best", 1),
    Rule("held-out top 2", 2),
    Rule("held-out top 3", 3),
    HAQ_PICK,
    Rule("pooled top 5", PICK_K, True),
)
FORMAT = "haq.bench.pick_rules"
VERSION = 2
RANKS = ("search", "smoothed", "repeated")
"""How a run's candidates are chosen: by search reward (haq's pick), by :func:`smoothed_rewards`,
or haq's candidates and then the run's most repeated proposals (``PickConfig.repeats``)."""
REPEATED = 2
"""How many of the run's most often proposed policies the ``repeated`` rank adds to haq's
candidates (fixed before it was measured)."""
RIDGE = 1.0
"""The ridge penalty of :func:`smoothed_rewards`, per indicator feature (chosen before it was measured)."""


@dataclass(frozen=True)
class Scores:
    """One run's top candidates (``run``: its directory): search rewards (best first) and rewards
    on each test half."""

    run: str
    model: str
    method: str
    seed: int
    search_images: int
    half_images: int
    search: tuple[float, ...]
    first: tuple[float, ...]
    second: tuple[float, ...]
    rank: str = "search"

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **self.__dict__})

    @classmethod
    def from_json(cls, line: str) -> "Scores":
        try:
            data = json.loads(line)
            if isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") in (1, VERSION):
                rank = str(data.get("rank", "search"))  # version 1 ranked by search reward only
                if rank in RANKS:
                    return cls(
                        str(data["run"]),
                        str(data["model"]),
                        str(data["method"]),
                        int(data["seed"]),
                        int(data["search_images"]),
                        int(data["half_images"]),
                        *(tuple(float(x) for x in data[k]) for k in ("search", "first", "second")),
                        rank,
                    )
        except (ValueError, KeyError, TypeError):
            pass
        raise HaqError(f"not a {FORMAT} version 1 or {VERSION} line: {line[:60]!r}; remove the file to measure afresh")


def smoothed_rewards(candidates: Sequence[tuple[QuantPolicy, float]], ridge: float = RIDGE) -> list[float]:
    """Each candidate's reward as predicted from the whole log: a ridge regression of the rewards
    of the distinct policies on one indicator per (layer, weight width) and (layer, activation
    width), with an unpenalized mean. Why: a search reward is one noisy draw, and policies that
    share a layer's widths share much of their accuracy loss, so a policy whose neighbours scored
    well is more likely good than one that was lucky alone."""
    seen: dict[PolicyKey, float] = {}
    for policy, reward in candidates:
        seen.setdefault(policy_key(policy), reward)
    columns = sorted({(n, "w", w) for key in seen for n, w, _ in key} | {(n, "a", a) for key in seen for n, _, a in key})
    index = {c: i for i, c in enumerate(columns)}

    def features(key: PolicyKey) -> np.ndarray:
        row = np.zeros(len(columns))
        for n, w, a in key:
            row[index[(n, "w", w)]] = row[index[(n, "a", a)]] = 1.0
        return row

    x = np.stack([features(k) for k in seen])
    y = np.asarray(list(seen.values()))
    xm, ym = x.mean(axis=0), y.mean()
    xc = x - xm
    coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(len(columns)), xc.T @ (y - ym))
    fitted = {k: float(ym + (features(k) - xm) @ coef) for k in seen}
    return [fitted[policy_key(p)] for p, _ in candidates]


def _argmax(values: Sequence[float]) -> int:
    """The first index of the largest value (ties go to the better search rank, as in the pick)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def crossfit(s: Scores, rule: Rule) -> float:
    """The rule's cross-fitted report: choose with one half, report on the other, both ways, mean."""

    def choose(half: tuple[float, ...]) -> int:
        n, m = s.search_images, s.half_images
        top = zip(s.search[: rule.top], half[: rule.top])
        return _argmax([(n * a + m * b) / (n + m) if rule.pooled else b for a, b in top])

    return (s.second[choose(s.first)] + s.first[choose(s.second)]) / 2


def settled_index(s: Scores) -> int | None:
    """Which of a ``repeated`` line's candidates is its run's most proposed policy (``None`` when no
    policy was proposed twice), from the run's log."""
    records = RunDir(Path(s.run)).read_episodes()
    logged = [(x.quant_policy(), x.reward) for x in records]
    candidates = pick_candidates(logged, PICK_K, REPEATED)
    if len(candidates) != len(s.search):
        raise HaqError(f"{s.run}: its log gives {len(candidates)} candidates, the scores {len(s.search)}; measure afresh")
    settled = settled_among(logged, candidates)
    return None if settled is None else candidates.index(settled)


def crossfit_deferring(s: Scores, settled: int | None, images: float) -> float:
    """:func:`crossfit` of the pick that keeps candidate ``settled`` unless the best on the choosing
    half beats it there by more than ``images`` images' worth."""
    margin = images * image_reward(RewardConfig(), s.half_images)
    every = list(range(len(s.search)))

    def choose(half: tuple[float, ...]) -> int:
        return deferring(every, dict(enumerate(half)), settled, margin)

    return (s.second[choose(s.first)] + s.first[choose(s.second)]) / 2


def read_scores(path: Path) -> list[Scores]:
    """The runs measured before (none when ``path`` does not exist); a last line that a kill cut
    short is cut off the file (its run is measured again)."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        atomic_write_text(path, complete)
    return [Scores.from_json(x) for x in complete.splitlines() if x]


def mean_gap(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired runs and a 95 % bootstrap interval (fixed resampling seed)."""
    diffs = [a - b for a, b in pairs]
    rng = random.Random(0)
    spread = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(BOOTSTRAP_DRAWS))
    return statistics.fmean(diffs), spread[int(0.025 * BOOTSTRAP_DRAWS)], spread[int(0.975 * BOOTSTRAP_DRAWS) - 1]


def _gap_text(pairs: list[tuple[float, float]]) -> str:
    """``a - b`` over paired runs as every comparison prints it: mean, interval and the runs each
    way (the caller closes the parenthesis, adding what it counts of)."""
    gap, lo, hi = mean_gap(pairs)
    better, worse = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
    return f"{gap:+.4f} (95 % bootstrap interval over runs [{lo:+.4f}, {hi:+.4f}]; better in {better}, worse in {worse}"


def rules_for(top: int) -> tuple[Rule, ...]:
    """The rules compared, with a held-out pick among all ``top`` scored candidates when that is
    more than haq's ``PICK_K``."""
    return RULES if top <= PICK_K else (*RULES, Rule(f"held-out top {top}", top))


def measure(
    root: Path,
    done: set[tuple[str, str]],
    sink: Callable[[Scores], None],
    top: int = PICK_K,
    models: Sequence[str] = (),
    rank: str = "search",
) -> None:
    """Score the ``top`` candidates (by ``rank``) of every single-fidelity run under ``root`` not
    yet in ``done`` (run, rank) (of ``models`` only, when given)."""
    wanted = []
    for r in read_results(root / RESULTS):
        run = run_dir(root, r.model, r.method, r.seed)
        if r.method.startswith("rl-multi") or (str(run), rank) in done or (models and r.model not in models):
            continue
        wanted.append((run, r))
    for key, runs in by_workbench(wanted).items():
        model, evaluator, val_samples, _ = key
        bench = Workbench(workbench_setting(key), workers=1)
        try:
            problem = bench.problem(bench.env)
            n = len(bench.workload.data.test)  # type: ignore[arg-type]
            halves = [
                problem.held_out(evaluator, Images("test", 0, n // 2)),
                problem.held_out(evaluator, Images("test", n // 2, n)),
            ]
            for run, r in runs:
                records = RunDir(run).read_episodes()
                logged = [(x.quant_policy(), x.reward) for x in records]
                ranked = logged if rank != "smoothed" else list(zip([p for p, _ in logged], smoothed_rewards(logged)))
                best = pick_candidates(ranked, top, REPEATED if rank == "repeated" else 0)
                policies = [records[i].quant_policy() for i in best]
                first, second = (tuple(problem.reward(m, ev.reference) for m in ev.evaluate_many(policies)) for ev in halves)
                sink(
                    Scores(
                        str(run),
                        model,
                        r.method,
                        r.seed,
                        val_samples,
                        n // 2,
                        tuple(records[i].reward for i in best),
                        first,
                        second,
                        rank,
                    )
                )
                print(f"{model} {r.method} s{r.seed}: scored ({rank})", file=sys.stderr, flush=True)
        finally:
            bench.close()


def report(scores: list[Scores], rules: tuple[Rule, ...] = RULES, defer: float = 0.0) -> str:
    """The Markdown tables (see the module docstring)."""
    lines = []
    for model in sorted({s.model for s in scores}):
        lines += _smoothed_against_pick([s for s in scores if s.model == model], model)
        lines += _repeated_against_pick([s for s in scores if s.model == model], model)
        if defer:
            lines += _deferring_against_pick([s for s in scores if s.model == model], model, defer)
        mine = [s for s in scores if s.model == model and s.rank == "search"]
        if not mine:
            continue
        lines += [
            f"\n### {model}: cross-fitted test reward by pick rule ({len(mine)} runs)\n",
            "| method | runs | " + " | ".join(r.name for r in rules) + " |",
            "|---|---|" + "---|" * len(rules),
        ]
        for method in sorted({s.method for s in mine}) + ["all"]:
            group = [s for s in mine if method in ("all", s.method)]
            means = " | ".join(f"{statistics.fmean(crossfit(s, rule) for s in group):+.4f}" for rule in rules)
            lines.append(f"| {method} | {len(group)} | {means} |")
        for rule in rules:
            if rule == HAQ_PICK:
                continue
            pairs = [(crossfit(s, rule), crossfit(s, HAQ_PICK)) for s in mine]
            lines.append(f"\n{rule.name} minus {HAQ_PICK.name}: {_gap_text(pairs)} of {len(mine)})")
    return "\n".join(lines)


def _smoothed_against_pick(scores: list[Scores], model: str) -> list[str]:
    """The held-out pick among the smoothed ranking's candidates minus haq's pick, paired by run."""
    plain = {s.run: s for s in scores if s.rank == "search"}
    pairs = [
        (crossfit(s, Rule("smoothed", len(s.search))), crossfit(plain[s.run], HAQ_PICK))
        for s in scores
        if s.rank == "smoothed" and s.run in plain
    ]
    if not pairs:
        return []
    return [
        f"\n{model}: held-out pick among the top {PICK_K} by smoothed reward minus {HAQ_PICK.name} (cross-fitted, "
        f"{len(pairs)} runs): {_gap_text(pairs)})"
    ]


def _repeated_against_pick(scores: list[Scores], model: str) -> list[str]:
    """The held-out pick among haq's candidates and the run's most repeated proposals minus haq's
    pick (its first ``PICK_K`` candidates, scored in the same line), paired by run, per method."""
    mine = [s for s in scores if s.rank == "repeated"]
    lines = []
    for method in sorted({s.method for s in mine}) + ["all"]:
        group = [s for s in mine if method in ("all", s.method)]
        pairs = [(crossfit(s, Rule("repeated", len(s.search))), crossfit(s, HAQ_PICK)) for s in group]
        if not pairs:
            continue
        added = statistics.fmean(len(s.search) - PICK_K for s in group)
        lines.append(
            f"\n{model} ({method}): held-out pick among the top {PICK_K} and the {REPEATED} most repeated proposals "
            f"({added:.1f} added on average) minus {HAQ_PICK.name} (cross-fitted, {len(pairs)} runs): {_gap_text(pairs)}); "
            f"means {statistics.fmean(a for a, _ in pairs):+.4f} against {statistics.fmean(b for _, b in pairs):+.4f}"
        )
    return lines


def _deferring_against_pick(scores: list[Scores], model: str, defer: float) -> list[str]:
    """The deferring pick minus the held-out pick among the same candidates (haq's and the most
    repeated), paired by run, per method."""
    mine = [(s, settled_index(s)) for s in scores if s.rank == "repeated"]
    lines = []
    for method in sorted({s.method for s, _ in mine}) + ["all"]:
        group = [(s, i) for s, i in mine if method in ("all", s.method)]
        pairs = [(crossfit_deferring(s, i, defer), crossfit(s, Rule("repeated", len(s.search)))) for s, i in group]
        if not pairs:
            continue
        lines.append(
            f"\n{model} ({method}): deferring to the most proposed (margin {defer:g} images) minus the held-out pick among "
            f"the same candidates (cross-fitted, {len(pairs)} runs): {_gap_text(pairs)}); "
            f"means {statistics.fmean(a for a, _ in pairs):+.4f} against {statistics.fmean(b for _, b in pairs):+.4f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("runs", nargs="+", type=Path, help="bench/search_quality.py --out directories")
    p.add_argument("--out", type=Path, default=Path("runs/pick-rules.jsonl"), help="candidate scores (JSON lines; resumed)")
    p.add_argument(
        "--top",
        type=int,
        default=PICK_K,
        help=f"candidates scored per run (default haq's {PICK_K}; more adds a held-out pick among all of them; "
        "keep one --out per value)",
    )
    p.add_argument("--models", nargs="+", default=(), help="score only these models' runs")
    p.add_argument(
        "--rank",
        choices=RANKS,
        default="search",
        help="choose the candidates by search reward (haq's pick), by smoothed reward, or haq's and the run's "
        f"{REPEATED} most repeated proposals",
    )
    p.add_argument(
        "--defer",
        type=float,
        default=0.0,
        help="with --rank repeated: also compare the pick that keeps the run's most proposed policy unless beaten by "
        "more than D images' worth of the choosing half (haq's --pick-defer)",
    )
    args = p.parse_args(argv)
    if args.defer < 0:
        p.error(f"--defer must be >= 0, got {args.defer}")
    if args.top < 1:
        p.error(f"--top must be >= 1, got {args.top}")
    if args.rank == "repeated" and args.top != PICK_K:
        p.error(f"--rank repeated adds to haq's {PICK_K} candidates; leave --top at {PICK_K}")
    try:
        scores = read_scores(args.out)
        for root in args.runs:
            if not (root / RESULTS).is_file():
                p.error(f"{root} holds no {RESULTS}; give a bench/search_quality.py --out directory")
            done = {(s.run, s.rank) for s in scores}

            def keep(s: Scores) -> None:
                append_durably(args.out, s.to_json() + "\n")
                scores.append(s)

            measure(root, done, keep, args.top, args.models, args.rank)
        text = report(scores, rules_for(args.top), args.defer)
    except HaqError as exc:
        print(f"pick_rules: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
