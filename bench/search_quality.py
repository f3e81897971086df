"""Search quality: the RL search against uniform, random, greedy and ILP baselines at EQUAL numbers
of evaluated policies, several seeds, with an honest final pick and the test split as the judge.

For every run, the top 5 policies by search reward are re-scored on held-out images the search
never saw and the best there is reported on the test split (:func:`haq.runs.final_pick.pick_run`,
what ``haq search`` does): rewards on the search's 300 images favour lucky policies, and this is
the number a user gets, except that the report here is under the workload's evaluator seed
alone (:data:`REPORT_SEEDS`), where ``haq`` averages three; ``bench/rejudge.py`` averages any
run's report over evaluator seeds afterwards, and ``bench/deployed.py`` gives what a user deploys
from each run (``haq``'s own pick, then the chosen policy's final evaluation: the longer DQ
fine-tune, the whole test split, more attacked images, averaged over evaluator seeds).
Every method gets its own evaluator cache (no method profits from another's evaluations); the
float model is trained once per workload (seed 0), the method's seed drives its own randomness.

The test split's first half selects and its second reports when the validation images run out
(every workload here); each run is also judged on the other fold (select on the second half,
report on the first, :func:`haq.problem.select.swapped_images`), and the mean of the two folds'
reports, the cross-fitted test reward, judges the method on every test image.

Columns: final test-split reward (median over seeds, and the range), the cross-fitted one, clean accuracy of the
chosen policy on the test images, its worst-case robust accuracy (full evaluator on the test
images; ``n/a`` when not measured), best search reward, evaluations (and, in brackets, the mean number of
distinct policies among them: a repeat is a lookup of a cached result); then, per workload, the
evaluations RL needed to reach random search's best (median over seeds, paired by seed), RL's
median against each baseline's with a 95 % bootstrap interval over seeds (by the final and by
the cross-fitted test reward), the same for the agent alone where it ran, and
the evaluator's noise: the reward std of one policy re-scored under different fine-tune /
attack seeds (full evaluator) or, for the cheap evaluator (deterministic), the binomial
sampling std of its accuracy term on the search's images. Where the default agent is seeded (the
paragraph below), its median minus the ILP's is judged against that noise: the issue's rule is
that a seeded agent counts only by beating its seed by more than the evaluator's noise. The
objective agents (whose actions contain the ILP's answers) are judged the same way.

``rl`` is the default agent: when the reward has no robustness term (``EnvConfig.action_prior =
"auto"``), since 2026-12-07 an objective agent (SAC setting the sensitivity ILP's per-layer error
weights and budget, as ``rl-alone-objective``), judged as seeded; before then (now ``rl-layer``
there) DDPG with actions centred on the sensitivity ILP's allocation at one of its prior
rungs (evaluated first, counted as evaluations: the cheapest within one standard error of the
best-scoring one), its actor held for the first agent episodes and
paid each layer's cost at its step; otherwise (since 2026-12-06) a portfolio: SAC over uniform bins
for the first half of the evaluations, then an objective agent (``rl-portfolio``; before then,
SAC over uniform bins throughout, now ``rl-layer``), judged as seeded too since its objective
agent's actions contain the ILP's answers.
Variants (``--variants``): ``rl-alone`` is the agent without the sensitivity ILP's allocations (SAC
over uniform bins, random warm-up, no prior rungs: what ``rl`` was on a robust reward before
2026-12-06, and v0.1's default): the agent alone, beside the seeded ``rl`` of a cheap-evaluator workload;
``rl-alone-sens`` is the agent alone with the sensitivity observation (``observation = "v1"``:
the per-layer information the ILP searches with, as state features, not as seeds);
``rl-alone-shift`` / ``rl-alone-ceiling`` (and ``rl-alone-sens-...``) are the agent alone with a
whole-episode budget repair (``projection = "shift"``, HAQ's: every request applied, then every
layer lowered a step per round until the episode fits; ``"ceiling"``: only the widest layers each
round); ``rl-alone-ceiling-wide`` is ``rl-alone-ceiling`` with SAC's target entropy at
:data:`WIDE_ENTROPY` (its ceiling-repaired runs repeated a policy in about half their episodes);
``rl-alone-credit`` / ``rl-alone-ceiling-credit`` are those agents alone paid each layer's cost
at its step (``AgentConfig.cost_credit = True``, :mod:`haq.search.credit`; the centred agent's
default, never measured on the agent alone); ``random-shift`` / ``random-ceiling`` are random
search with its draws repaired the same way (``haq baseline --method random --projection ...``),
the fair random comparator of an agent alone with that repair; ``rl-alone-policy`` /
``rl-alone-ceiling-policy`` are those agents alone deciding the whole policy in one step
(``AgentConfig.decision = "policy"``, :mod:`haq.search.whole_policy`), and ``rl-policy`` the
default agent so (seeded where the default is: a centred SAC, since DDPG is per-layer only);
``rl-alone-objective`` is the agent alone setting the sensitivity ILP's objective in one step
(``AgentConfig.decision = "objective"``, :mod:`haq.search.objective`: per-layer error weights and
the budget solved for), judged also as a seeded agent against the ILP, since its actions contain
the ILP's answers; ``rl-alone-objective-calm`` is that agent with SAC's entropy weight starting
at 0.1 instead of 1; ``rl-portfolio`` runs the default per-layer agent for the first half of
the evaluations and an objective agent for the second (``AgentConfig.decision = "portfolio"``),
one pick over both, judged like ``rl`` and, as ``rl-alone-objective`` is, as seeded against the ILP
(the default agent on the digits models since 2026-12-06: ``AgentConfig.decision = "auto"``);
``rl-layer`` is the default agent deciding one layer per step, as it did everywhere before then;
``rl-sac`` / ``rl-ddpg`` are the default recipe with that algorithm; ``rl-dense`` / ``rl-sparse``
the default with a centred agent's noise on every layer / on about 3 layers per episode;
``rl-sens`` is the default agent with the sensitivity observation (``EnvConfig.observation =
"v1"``); ``rl-prior`` is DDPG starting at the sensitivity ILP's allocation whatever the
evaluator (``action_prior = "sensitivity"``, :data:`PRIOR_AGENT`); ``rl-centre`` is DDPG over
uniform bins starting at action 0 (the middle widths) with per-layer and per-episode shift noise
(:data:`CENTRE_AGENT`); ``rl-multi`` is the default agent with the multi-fidelity evaluator
(settings with the full evaluator only), also reporting its full evaluations (those its final
pick promotes included); ``rl-multi-cheap`` is the same with the clean-only screen
(``EvalConfig.screen_kind = "cheap"``), ``rl-multi-unpromoted`` without the promotion before the
pick (``PickConfig.promote = 0``), ``rl-multi-patience`` ending the calibration once the best full
reward stops rising (``EvalConfig.screen_patience = 5``); ``rl-lockstep`` is the default agent
making each batch's update before proposing the next (``AgentConfig.overlap_updates = False``),
which differs from ``rl`` only with ``--workers`` above 1; ``rl-reheat`` is the default agent whose
centred noise grows after each episode that repeats a policy of its run
(``AgentConfig.centred_noise_reheat = 2``); ``rl-best-rung`` centres the default agent on its
best-scoring prior rung instead of the cheapest within the rewards' sampling noise of it
(``AgentConfig.prior_centre = "best"``, the default before 2026-12-04); ``rl-wide`` is the default
agent with SAC's target entropy raised from −1 to −0.5 per action dimension
(``AgentConfig.target_entropy``; the uncentred SAC agent only: the centred agents are DDPG);
``rl-redraw`` is the default agent whose objective agent draws a proposal that repeats a policy
of its run again, up to 8 times (``AgentConfig.redraws``), and ``rl-next`` the same replacing it by
its objective's next-best allocation instead (``AgentConfig.redraw_from = "objective"``).

    python bench/search_quality.py --quick   # digits CNN (40 evaluations) and ResNet-20 (10), cheap evaluator
    python bench/search_quality.py --full    # ResNet-20 + MobileNetV2 (cheap, 300) and digits CNN + MLP (full, 300): hours
    python bench/search_quality.py --full --models resnet20 --evaluations 100 --seeds 0 --workers 2
    python bench/search_quality.py --merge OUT_A OUT_B   # one table from runs split over invocations
    python bench/search_quality.py --full --out OUT --resume   # continue a killed benchmark (same arguments)

Run directories (plot them with ``haq plot``) and results.json go to ``--out``, with the
invocation's settings (``benchmark.json``). Each finished run is appended to results.json at once;
``--resume`` keeps those and starts again the run a kill cut off (its seed gives it the same log).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random as pyrandom
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import torch

from haq.baselines import BaselineConfig, SensitivityConfig, run_baseline
from haq.core.fileio import atomic_write_text
from haq.evaluation.config import FINETUNE_LRS, SINGLE_FIDELITY, EvalConfig
from haq.evaluation.evaluators import Evaluator, build_evaluator, policy_key
from haq.evaluation.metrics import PolicyMetrics
from haq.jobs.problems import load_device_table
from haq.parallel import start_pool
from haq.problem.config import REPAIRS, BudgetConfig, EnvConfig
from haq.problem.finetune_lr import resolve_finetune_lr
from haq.problem.problem import SearchProblem, build_problem
from haq.problem.reward import sampling_std
from haq.problem.select import pick_final, swapped_images
from haq.quant import QuantPolicy
from haq.runs.final_pick import FinalPick, PickConfig, pick_run
from haq.runs.rundir import CONFIG_FILE
from haq.search.config import PORTFOLIO as PORTFOLIO_DECISION
from haq.search.config import AgentConfig, SearchConfig
from haq.search.run import run_search
from haq.training import parse_torch_device
from haq.workload import Workload, WorkloadConfig, load_workload

METHODS = ("rl", "random", "greedy", "ilp", "uniform")
ALONE = "rl-alone"
"""The agent without the sensitivity ILP's allocations: where the default agent is seeded with
them (a reward without a robustness term), the agent alone beside it."""
ALONE_SENS = "rl-alone-sens"
"""The agent alone with the sensitivity observation."""
REPAIRED = {f"{agent}-{rule}": (agent, rule) for agent in (ALONE, ALONE_SENS) for rule in REPAIRS}
"""The agents alone with a whole-episode budget repair (``EnvConfig.projection``), e.g.
``rl-alone-shift``: name → (the agent alone it repairs, the repair)."""
ALONE_CEILING = f"{ALONE}-ceiling"
"""The agent alone with the ceiling repair (one of :data:`REPAIRED`), which two more variants build on."""
ALONE_WIDE = f"{ALONE_CEILING}-wide"
"""The agent alone with the ceiling repair and SAC's wider target entropy (:data:`WIDE_ENTROPY`)."""
CREDITED = {f"{agent}-credit": agent for agent in (ALONE, ALONE_CEILING)}
"""The agents alone paid each layer's cost at its step (``AgentConfig.cost_credit = True``, the
centred agent's default): name → the agent alone it credits."""
WHOLE = {f"{agent}-policy": agent for agent in (ALONE, ALONE_CEILING)}
"""The agents alone deciding the whole policy in one step (``AgentConfig.decision = "policy"``):
name → the agent alone it changes."""
ALONES = (ALONE, *REPAIRED, ALONE_WIDE, *CREDITED, *WHOLE)
"""The agents alone judged against every baseline."""
OBJECTIVE = f"{ALONE}-objective"
"""The agent setting the sensitivity ILP's objective in one step (``AgentConfig.decision =
"objective"``, :mod:`haq.search.objective`): never given a baseline's solution, but its actions
contain the ILP's own answers, so it is judged against every baseline and, as a seeded agent is,
against the ILP by more than the evaluator's noise."""
OBJECTIVE_CALM = f"{OBJECTIVE}-calm"
"""The objective agent with SAC's entropy weight starting at :data:`CALM_ENTROPY` instead of 1."""
PORTFOLIO = "rl-portfolio"
"""The default agent's settings as a portfolio (``AgentConfig.decision = "portfolio"``): a per-layer
agent for the first half of the evaluations, an objective agent for the second; where the problem
has no action prior (the robust-reward workloads) it is the default agent since 2026-12-06."""
LAYER = "rl-layer"
"""The default agent's settings deciding one layer per step (``AgentConfig.decision = "layer"``):
the default agent everywhere before 2026-12-06 and on the clean-accuracy workloads (ResNet-20,
MobileNetV2, cheap evaluator: centred DDPG) before 2026-12-07, so every ``rl`` row written before
then on those workloads is this agent's."""
REDRAW = "rl-redraw"
"""The default agent with its objective agent's repeating proposals drawn again (``AgentConfig.redraws``,
:mod:`haq.search.redraw`): on a robust-reward workload the portfolio's first half is the default's own."""
REDRAW_TRIES = 8
"""``rl-redraw``'s and ``rl-next``'s ``AgentConfig.redraws``."""
NEXT = "rl-next"
"""The default agent with its objective agent's repeating proposals replaced by the next-best
allocation under the same objective (``AgentConfig.redraw_from = "objective"``)."""
CALM_ENTROPY = 0.1
"""``rl-alone-objective-calm``'s ``AgentConfig.ent_coef_init``: at 1, SAC's weight tunes down over
about 100 episodes, and on a 4-layer problem with made-up sensitivities the objective agent's
median reward stayed flat for 100 episodes (rising from episode 40 at 0.1)."""
RANDOM_REPAIRED = {f"random-{rule}": rule for rule in REPAIRS}
"""The random baseline with its draws brought within budget by a whole-episode repair
(``EnvConfig.projection``), as the repaired agents' episodes are: name → the repair. An agent
alone with a repair is also judged against the random search of the same repair."""
FISHER = {f"{method}-fisher": method for method in ("greedy", "ilp")}
"""Greedy and the ILP allocating by the clean-loss Fisher estimate whatever the reward (their
default, ``auto``, measures the sensitivity when the reward has a robustness term): name → the
baseline. Deterministic, one run each, as their defaults."""
VARIANTS = (
    ALONE,
    ALONE_SENS,
    *REPAIRED,
    ALONE_WIDE,
    *CREDITED,
    *WHOLE,
    OBJECTIVE,
    OBJECTIVE_CALM,
    PORTFOLIO,
    LAYER,
    REDRAW,
    NEXT,
    *RANDOM_REPAIRED,
    *FISHER,
    "rl-sac",
    "rl-ddpg",
    "rl-dense",
    "rl-sparse",
    "rl-sens",
    "rl-prior",
    "rl-centre",
    "rl-multi",
    "rl-multi-cheap",
    "rl-multi-unpromoted",
    "rl-multi-patience",
    "rl-lockstep",
    "rl-reheat",
    "rl-best-rung",
    "rl-wide",
    "rl-policy",
)
SEEDED = ("rl", "random", *(v for v in VARIANTS if v not in FISHER))
PICK_K = 5
REPORT_SEEDS = 1
"""The pick reports under the workload's evaluator seed only (``haq``'s default averages 3): every
row this benchmark wrote before 2026-12-05 did, and rows are merged across invocations;
``bench/rejudge.py`` gives any run's seed-averaged figures."""
PICK_REPEATS = 0
"""The pick re-scores the top ``PICK_K`` only (``haq``'s default adds the run's 2 most repeated
proposals since 2026-12-06): every row written before did, and rows are merged across invocations;
``bench/pick_rules.py --rank repeated`` and ``bench/rejudge.py --pick-repeats 2`` give haq's pick."""
PICK_DEFER = 0.0
"""The pick takes the best on the choosing half (``haq``'s default keeps the run's most proposed
policy unless beaten there by more than 2 images' worth since 2026-12-06), for the same reason;
``bench/pick_rules.py --rank repeated --defer 2`` and ``bench/rejudge.py --pick-repeats 2
--pick-defer 2`` give haq's pick."""
WIDE_ENTROPY = -0.5
"""``rl-wide``'s ``AgentConfig.target_entropy``: a squashed spread of about half a bit-width bin
(seven bins over [-1, 1]) where stable-baselines3's −1 gives a third."""
CHANGED = {
    ALONE_WIDE: (ALONE_CEILING, {"target_entropy": WIDE_ENTROPY}),
    **{name: (agent, {"cost_credit": True}) for name, agent in CREDITED.items()},
    **{name: (agent, {"decision": "policy"}) for name, agent in WHOLE.items()},
    OBJECTIVE: (ALONE, {"decision": "objective"}),
    OBJECTIVE_CALM: (OBJECTIVE, {"ent_coef_init": CALM_ENTROPY}),
}
"""The agents alone that are another agent alone with one agent setting changed, in that agent's
environment: name → (that agent alone, the change)."""
PATIENCE = 5
"""``rl-multi-patience``'s ``EvalConfig.screen_patience``."""
BOOTSTRAP_DRAWS = 4000
"""Resamples of the seeds behind each comparison's interval (:func:`median_gap`)."""
RESULTS = "results.json"
INVOCATION = "benchmark.json"
"""The settings, methods and worker count an ``--out`` was started with (``--resume`` must match them)."""
INVOCATION_FORMAT = "haq.bench.search_quality"
INVOCATION_VERSION = 1
WorkbenchKey = tuple[str, str, int, float]
"""The runs one workbench scores: (model, evaluator, val_samples, DQ fine-tune rate)."""
RunKey = tuple[str, str, int, float, str, int]
"""One run of the benchmark: :data:`WorkbenchKey`, then method and seed."""
T = TypeVar("T")
HISTORIC_LR = 1e-3
"""The DQ fine-tune rate of every row written before rows named theirs (``EvalConfig.finetune_lr``,
the rate of every model before rates were chosen per model), and of every cheap-evaluator row."""


@dataclass(frozen=True)
class Setting:
    """One workload of the benchmark and its budget in evaluations."""

    model: str
    evaluator: str
    evaluations: int
    seeds: tuple[int, ...]
    val_samples: int = EvalConfig().val_samples
    metric: str = "latency"
    ratio: float = 0.5
    finetune_lrs: tuple[float, ...] = ()
    """Candidate DQ fine-tune rates, one chosen for the model before its runs (``EvalConfig.finetune_lrs``;
    one candidate: that rate); empty: ``EvalConfig``'s default."""


@dataclass(frozen=True)
class RunResult:
    """One method on one workload with one seed."""

    model: str
    evaluator: str
    val_samples: int
    method: str
    seed: int
    evaluations: int
    seconds: float
    best_reward: float
    best_policy: dict[str, tuple[int, int]]
    rewards: tuple[float, ...]
    test_reward: float
    test_clean: float
    test_robust: float | None
    full_evaluations: int | None
    crossfit_reward: float | None = None  # mean of the two folds' test rewards (None: the pick reported on the whole test split)
    distinct: int | None = None  # distinct policies among the evaluations (None: a row from before they were counted)
    finetune_lr: float = HISTORIC_LR  # the full evaluator's DQ fine-tune rate (rows without one: the default they ran under)


MODES = {
    "quick": (
        Setting("digits_cnn", "cheap", 40, (0, 1, 2)),
        Setting("resnet20", "cheap", 10, (0, 1), val_samples=150),
    ),
    "full": (
        Setting("resnet20", "cheap", 300, (0, 1, 2)),
        Setting("mobilenetv2", "cheap", 300, (0, 1, 2)),
        Setting("digits_cnn", "full", 300, (0, 1, 2)),
        Setting("digits_mlp", "full", 300, (0, 1, 2)),
    ),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def setting_env(s: Setting) -> EnvConfig:
    """The environment every method of ``s`` searches, before a variant changes it."""
    return EnvConfig(
        workload=WorkloadConfig(model=s.model),
        budget=BudgetConfig(metric=s.metric, ratio=s.ratio),
        evaluation=EvalConfig(kind=s.evaluator, val_samples=s.val_samples, finetune_lrs=s.finetune_lrs or FINETUNE_LRS),
    )


class Workbench:
    """One workload's shared pieces: the trained model, the table, and one uncached evaluator per
    kind (in-process, or on a worker pool), so each method starts from an empty cache."""

    def __init__(self, setting: Setting, workers: int) -> None:
        env = setting_env(setting)
        self.table = load_device_table(env.table, env.workload, log=log)
        self.workload: Workload = load_workload(env.workload, parse_torch_device(env.torch_device), log=log)
        self.env = resolve_finetune_lr(env, self.workload, self.table, None, log)  # measured afresh, like the sensitivity
        kinds = SINGLE_FIDELITY if setting.evaluator == "full" else ("cheap", "full")  # multi variants run on full settings only
        self.pool = None
        if workers > 1:
            self.pool = start_pool(self.workload, self.table, self.env.evaluation, kinds, self.env.torch_device, workers, log=log)
            self.inner: dict[str, Evaluator] = {k: self.pool.evaluator(k) for k in kinds}
        else:
            ev = self.env.evaluation
            self.inner = {k: build_evaluator(self.workload, self.table, dataclasses.replace(ev, kind=k)) for k in kinds}
        self.workers = workers

    def problem(self, env: EnvConfig) -> SearchProblem:
        """A problem of ``env`` (this workload) with fresh caches around the shared evaluators."""
        problem = build_problem(env, table=self.table, workload=self.workload, evaluator_factory=lambda kind: self.inner[kind])
        problem.workers = self.workers
        return problem

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


PRIOR_AGENT = AgentConfig(algo="ddpg", start_at_centre=True, warmup_episodes=0, noise_sigma=0.25, noise_decay=0.98)
"""The ``rl-prior`` agent: DDPG starting at the sensitivity prior, exploring locally around it."""


CENTRE_AGENT = AgentConfig(
    algo="ddpg", start_at_centre=True, warmup_episodes=0, noise_sigma=0.15, noise_shift=0.3, noise_decay=0.98
)
"""The ``rl-centre`` agent: DDPG starting at the middle widths, per-layer plus per-episode shift noise."""


ALONE_AGENT = AgentConfig(algo="sac", start_at_centre=False, decision="layer")
"""The agent alone: SAC over uniform bins deciding one layer per step (without ``decision``, a
problem without an action prior would make it a portfolio, :meth:`AgentConfig.resolved_decision`)."""


def method_search(env: EnvConfig, method: str, evaluations: int, seed: int) -> SearchConfig:
    """The search config of an RL method (the variants also change the agent)."""
    if method in CHANGED:
        alone, change = CHANGED[method]
        search = method_search(env, alone, evaluations, seed)
        return dataclasses.replace(search, agent=dataclasses.replace(search.agent, **change))
    agents = {
        "rl-prior": PRIOR_AGENT,
        "rl-centre": CENTRE_AGENT,
        ALONE: ALONE_AGENT,
        ALONE_SENS: ALONE_AGENT,
        **{name: ALONE_AGENT for name in REPAIRED},
        "rl-sac": AgentConfig(algo="sac"),
        "rl-ddpg": AgentConfig(algo="ddpg"),
        "rl-dense": AgentConfig(centred_noise_layers=0.0),
        "rl-sparse": AgentConfig(centred_noise_layers=3.0),
        "rl-lockstep": AgentConfig(overlap_updates=False),
        "rl-reheat": AgentConfig(centred_noise_reheat=2.0),
        "rl-best-rung": AgentConfig(prior_centre="best"),
        "rl-wide": AgentConfig(target_entropy=WIDE_ENTROPY),
        "rl-policy": AgentConfig(decision="policy"),
        PORTFOLIO: AgentConfig(decision="portfolio"),
        LAYER: AgentConfig(decision="layer"),
        REDRAW: AgentConfig(redraws=REDRAW_TRIES),
        NEXT: AgentConfig(redraws=REDRAW_TRIES, redraw_from="objective"),
    }
    agent = agents.get(method, AgentConfig())
    return SearchConfig(env=env, agent=agent, episodes=evaluations, seed=seed)


def method_env(env: EnvConfig, method: str) -> EnvConfig:
    if method == "rl-sens":
        return dataclasses.replace(env, observation="v1")
    if method == ALONE_SENS:
        return dataclasses.replace(env, observation="v1", action_prior="uniform")
    if method == "rl-prior":
        return dataclasses.replace(env, action_prior="sensitivity")
    if method in REPAIRED:
        agent, rule = REPAIRED[method]
        return dataclasses.replace(method_env(env, agent), projection=rule)
    if method in CHANGED:
        return method_env(env, CHANGED[method][0])
    if method in RANDOM_REPAIRED:
        return dataclasses.replace(env, projection=RANDOM_REPAIRED[method])
    if method in ("rl-centre", ALONE):
        return dataclasses.replace(env, action_prior="uniform")
    if method in ("rl-multi", "rl-multi-unpromoted"):
        return dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, kind="multi"))
    if method == "rl-multi-cheap":
        return dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, kind="multi", screen_kind="cheap"))
    if method == "rl-multi-patience":
        return dataclasses.replace(env, evaluation=dataclasses.replace(env.evaluation, kind="multi", screen_patience=PATIENCE))
    return env


def method_pick(
    method: str, report_seeds: int = REPORT_SEEDS, repeats: int = PICK_REPEATS, defer: float = PICK_DEFER
) -> PickConfig:
    """How a ``method``'s run picks its final policy: the benchmark's pick, promoting before it
    (multi-fidelity runs) unless the method is ``rl-multi-unpromoted``."""
    promote = 0.0 if method == "rl-multi-unpromoted" else PickConfig().promote
    return PickConfig(PICK_K, promote=promote, report_seeds=report_seeds, repeats=repeats, defer=defer)


def run_method(bench: Workbench, method: str, seed: int, evaluations: int, out: Path) -> RunResult:
    """Run one method, then pick its final policy honestly and report it on the test images."""
    env = method_env(bench.env, method)
    problem = bench.problem(env)
    start = time.perf_counter()
    if method.startswith("rl"):
        result = run_search(method_search(env, method, evaluations, seed), problem, out)
    else:
        baseline = "random" if method in RANDOM_REPAIRED else FISHER.get(method, method)
        sensitivity = SensitivityConfig(estimator="fisher" if method in FISHER else "auto")
        cfg = BaselineConfig(method=baseline, evaluations=evaluations, seed=seed, sensitivity=sensitivity)
        result = run_baseline(cfg, problem, out)
    seconds = time.perf_counter() - start
    records = list(result.records)
    pick_cfg = method_pick(method)
    final = pick_run(problem, records, pick_cfg)  # promotes first
    pick = final.pick
    crossfit = crossfit_reward(problem, final, pick_cfg)
    full_evals = problem.screen.full_evaluations if problem.screen is not None else None
    robust = pick.test.robust_acc
    if robust is None:
        full = dataclasses.replace(env.evaluation, kind="full")
        robust = final_robust(bench, pick.policy, full)
    return RunResult(
        bench.env.workload.model,
        bench.env.evaluation.kind,
        bench.env.evaluation.val_samples,
        method,
        seed,
        len(records),
        seconds,
        result.best.reward,
        dict(result.best.policy),
        tuple(r.reward for r in records),
        pick.test_reward,
        pick.test.clean_acc,
        robust,
        full_evals,
        crossfit,
        len({policy_key(r.quant_policy()) for r in records}),
        bench.env.evaluation.finetune_lr,
    )


def crossfit_reward(problem: SearchProblem, final: FinalPick, cfg: PickConfig) -> float | None:
    """The mean of the pick's test reward and the other fold's: ``final``'s candidates picked again
    under ``cfg`` on the second half of the test split and reported on the first
    (:func:`haq.problem.select.swapped_images`); ``None`` when the pick reported on the whole test split."""
    images = swapped_images(problem, cfg.select_samples)
    if images is None:
        return None
    candidates = [(r.quant_policy(), r.reward) for r in final.candidates]
    other = pick_final(
        problem,
        candidates,
        cfg.k,
        images=images,
        seeds=cfg.report_seeds,
        repeats=cfg.repeats,
        defer=cfg.defer,
        select_seeds=cfg.select_seeds,
    )
    return (final.pick.test_reward + other.test_reward) / 2


def final_robust(bench: Workbench, policy: QuantPolicy, cfg: EvalConfig) -> float | None:
    """Worst-case robust accuracy of ``policy`` under the full evaluator on the test split."""
    test = bench.workload.data.test
    n = len(test)  # type: ignore[arg-type]
    scoped = dataclasses.replace(bench.workload, data=dataclasses.replace(bench.workload.data, val=test))
    ev = build_evaluator(scoped, bench.table, dataclasses.replace(cfg, val_samples=n, robust_samples=min(cfg.robust_samples, n)))
    return ev.evaluate(policy).robust_acc


def evaluator_noise(bench: Workbench, policy: QuantPolicy, kind: str, seeds: int = 3) -> float:
    """Reward std of one policy under ``seeds`` fine-tune / attack seeds (full), or the binomial
    sampling std of the accuracy term on the search's images (cheap: deterministic per policy)."""
    problem = bench.problem(bench.env)
    if kind != "full":
        n = bench.env.evaluation.val_samples
        return sampling_std(problem.score(policy).metrics, bench.env.reward, n, n)
    rewards = []
    for s in range(seeds):
        wl = dataclasses.replace(bench.workload, config=dataclasses.replace(bench.workload.config, seed=100 + s))
        ev = build_evaluator(wl, bench.table, bench.env.evaluation)
        rewards.append(problem.reward(ev.evaluate(policy), ev.reference))
    return statistics.stdev(rewards)


def reached(rewards: tuple[float, ...], target: float) -> int | None:
    """Evaluations (1-based) until the best reward reached ``target``; None if never."""
    best = -math.inf
    for i, r in enumerate(rewards):
        best = max(best, r)
        if best >= target - 1e-12:
            return i + 1
    return None


def run_dir(root: Path, model: str, method: str, seed: int) -> Path:
    """Where one method's run of one seed on one model lives under a benchmark's ``--out``."""
    return root / model / f"{method}-s{seed}"


def run_key(r: RunResult) -> RunKey:
    return (*workbench_key(r), r.method, r.seed)


def workbench_key(r: RunResult) -> WorkbenchKey:
    """What a run's workbench is built from: its model, evaluator, images and DQ fine-tune rate."""
    return (r.model, r.evaluator, r.val_samples, r.finetune_lr)


def workbench_setting(key: WorkbenchKey) -> Setting:
    """The setting whose :class:`Workbench` scores runs of ``key`` as they ran (at their own rate)."""
    model, evaluator, val_samples, lr = key
    return Setting(model, evaluator, 0, (), val_samples, finetune_lrs=(lr,))


def by_workbench(items: Iterable[tuple[T, RunResult]]) -> dict[WorkbenchKey, list[tuple[T, RunResult]]]:
    """``(anything, run)`` pairs grouped by :func:`workbench_key`, groups and pairs in first-seen order."""
    groups: dict[WorkbenchKey, list[tuple[T, RunResult]]] = {}
    for item in items:
        groups.setdefault(workbench_key(item[1]), []).append(item)
    return groups


def bench_setting(
    setting: Setting,
    methods: tuple[str, ...],
    workers: int,
    root: Path,
    sink: Callable[[RunResult], None],
    done: Mapping[RunKey, RunResult],
) -> str:
    """Run ``setting``'s methods and seeds (those in ``done`` are kept, not run) and summarize them."""
    bench = Workbench(setting, workers)
    try:
        results = []
        for method in methods:
            if method.startswith("rl-multi") and setting.evaluator != "full":
                continue
            for seed in setting.seeds if method in SEEDED else setting.seeds[:1]:
                out = run_dir(root, setting.model, method, seed)
                lr = bench.env.evaluation.finetune_lr
                kept = done.get((setting.model, setting.evaluator, setting.val_samples, lr, method, seed))
                if kept is not None:
                    log(f"{setting.model}: {method} seed {seed}: kept from {RESULTS}")
                    results.append(kept)
                    continue
                if out.exists():  # cut off by a kill before its result was written: the same seed runs it again
                    log(f"{setting.model}: {method} seed {seed} was cut off; starting it again")
                    shutil.rmtree(out)
                log(f"{setting.model}: {method} seed {seed}, {setting.evaluations} evaluations")
                r = run_method(bench, method, seed, setting.evaluations, out)
                sink(r)
                results.append(r)
        uniform = next((r for r in results if r.method == "uniform"), None)
        noise = (
            evaluator_noise(bench, QuantPolicy.from_pairs(uniform.best_policy.items()), setting.evaluator)
            if uniform is not None
            else float("nan")
        )
    finally:
        bench.close()
    return summary(setting, results, noise)


def _med(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:+.3f}"
    return f"{statistics.median(values):+.3f} [{min(values):+.3f}, {max(values):+.3f}]"


def _pct(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{100 * statistics.median(known):.1f}%" if known else "n/a"


def _rate(s: Setting, results: list[RunResult]) -> str:
    """The DQ fine-tune rate in a table's title, when the full evaluator ran at another than the historic one."""
    rates = {r.finetune_lr for r in results}
    return (
        ""
        if s.evaluator == "cheap" or rates <= {HISTORIC_LR}
        else f", DQ fine-tune lr {', '.join(f'{x:g}' for x in sorted(rates))}"
    )


def summary(s: Setting, results: list[RunResult], noise: float) -> str:
    """One row per method (seeds aggregated), then RL's evaluations to reach random's best."""
    lines = [
        f"\n### {s.model}: {s.evaluator} evaluator ({s.val_samples} images{_rate(s, results)}), Bit Fusion, "
        f"{s.metric} budget {s.ratio}×, {s.evaluations} evaluations\n",
        "| method | seeds | evals (distinct) | final test reward (median [range]) | cross-fitted test reward | test clean acc "
        "| test robust acc | best search reward | full evals (mean, most) | minutes / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in (*METHODS, *VARIANTS):
        rows = [r for r in results if r.method == method]
        if not rows:
            continue
        full = [r.full_evaluations for r in rows if r.full_evaluations is not None]
        evals = statistics.mean(r.evaluations for r in rows)
        distinct = [r.distinct for r in rows if r.distinct is not None]
        counted = f" ({statistics.mean(distinct):.0f})" if len(distinct) == len(rows) else ""
        crossfit = [r.crossfit_reward for r in rows if r.crossfit_reward is not None]
        lines.append(
            f"| {method} | {len(rows)} | {evals:.0f}{counted} | {_med([r.test_reward for r in rows])} "
            f"| {_med(crossfit) if len(crossfit) == len(rows) else 'n/a'} "
            f"| {_pct([r.test_clean for r in rows])} | {_pct([r.test_robust for r in rows])} "
            f"| {_med([r.best_reward for r in rows])} "
            f"| {f'{statistics.mean(full):.0f}, {max(full)}' if full else 'all'} "
            f"| {statistics.mean(r.seconds for r in rows) / 60:.1f} |"
        )
    random = {r.seed: r for r in results if r.method == "random"}
    for method in ("rl", *VARIANTS):
        needed = [reached(r.rewards, max(random[r.seed].rewards)) for r in results if r.method == method and r.seed in random]
        if needed:
            shown = ", ".join(str(n) if n is not None else f">{s.evaluations}" for n in needed)
            half = sum(n is not None and n <= s.evaluations // 2 for n in needed)
            lines.append(
                f"\n{method}: evaluations to reach random search's best (per seed): {shown} "
                f"(within {s.evaluations // 2}: {half} of {len(needed)})"
            )
    judges = (TEST, CROSSFIT) if all(r.crossfit_reward is not None for r in results) else (TEST,)
    for verdicts in (rl_against_baselines, alone_against_baselines, variant_verdicts, multi_fidelity_verdicts):
        for judge in judges:
            lines += verdicts(results, judge)
    stand_in = seed_noise(s, results, noise)
    for judge in judges:
        lines += seeded_verdicts(s, results, stand_in, judge)
    ilp = next((r for r in results if r.method == "ilp"), None)
    prior_runs = [r for r in results if r.method == "rl-prior"]
    if ilp is not None and prior_runs:
        seed_reward = ilp.rewards[0]  # the ILP's first candidate is the prior rl-prior starts from
        margins = ", ".join(f"{r.best_reward - seed_reward:+.3f}" for r in prior_runs)
        lines.append(
            f"\nrl-prior is seeded (its zero action is the ILP's first candidate, search reward {seed_reward:+.3f}): "
            f"best search reward minus that, per seed: {margins} (counts only above the noise below)"
        )
    if not math.isnan(noise):
        measured = f"{noise:.4f}"
    elif not math.isnan(stand_in):
        measured = f"{stand_in:.4f} (not measured here: the binomial sampling std at the ILP pick's test accuracy)"
    else:
        measured = "not measured (it is, beside a uniform run)"
    lines.append(f"\nevaluator noise (reward std of one policy): {measured}")
    return "\n".join(lines)


def median_gap(mine: dict[int, float], theirs: dict[int, float], draws: int = BOOTSTRAP_DRAWS) -> tuple[float, float, float]:
    """Median of ``mine`` minus median of ``theirs`` over the seeds both ran, and a 95 % bootstrap
    interval of it: the seeds resampled with replacement, each draw keeping a seed's pair together.
    A method run once (a deterministic baseline: one seed stands for all) is a constant. Why: the
    targets compare medians over a handful of seeds of a noisy evaluator, and whether a gap of
    0.01 is a gap at all is what the interval says (fixed resampling seed: the same runs always
    print the same interval)."""
    const = next(iter(theirs.values())) if len(theirs) == 1 else None
    seeds = sorted(mine) if const is not None else sorted(set(mine) & set(theirs))
    if not seeds:
        raise ValueError("no seed in common")

    def gap(sample: list[int]) -> float:
        other = const if const is not None else statistics.median(theirs[k] for k in sample)
        return statistics.median(mine[k] for k in sample) - other

    rng = pyrandom.Random(0)
    spread = sorted(gap(rng.choices(seeds, k=len(seeds))) for _ in range(draws))
    return gap(seeds), spread[int(0.025 * draws)], spread[int(0.975 * draws) - 1]


def _test(r: RunResult) -> float:
    return r.test_reward


def _crossfit(r: RunResult) -> float:
    if r.crossfit_reward is None:
        raise ValueError(f"{r.method} seed {r.seed} has no cross-fitted reward")
    return r.crossfit_reward


Judge = tuple[str, Callable[[RunResult], float]]
"""A verdict's label and the reward of a run it compares."""
TEST: Judge = ("final test reward", _test)
CROSSFIT: Judge = ("cross-fitted test reward", _crossfit)
"""What the verdicts compare: the pick's report, or the mean of both folds'."""


def rl_against_baselines(
    results: list[RunResult], judge: Judge = TEST, agent: str = "rl", baselines: Sequence[str] = METHODS[1:]
) -> list[str]:
    """The ``agent``'s (by default the default agent's) median ``judge`` reward against each
    baseline's (target: >= each), with :func:`median_gap`'s interval and, where both ran several
    seeds, the paired count."""
    label, value = judge
    rl = {r.seed: value(r) for r in results if r.method == agent}
    out = []
    for method in baselines:
        theirs = {r.seed: value(r) for r in results if r.method == method}
        common = set(rl) & set(theirs)
        if len(rl) < 2 or not theirs or (len(theirs) > 1 and len(common) < 2):
            continue
        point, lo, hi = median_gap(rl, theirs)
        if len(theirs) > 1:
            paired = sum(rl[k] > theirs[k] for k in common), sum(rl[k] < theirs[k] for k in common)
            detail = f"paired by seed: {agent} better in {paired[0]}, worse in {paired[1]} of {len(common)}"
        else:
            detail = f"one run of {method}, taken as fixed"
        out.append(
            f"\n{agent} minus {method}, median {label}: {point:+.4f} (95 % bootstrap interval over seeds "
            f"[{lo:+.4f}, {hi:+.4f}]; {detail})"
        )
    return out


def variant_verdicts(results: list[RunResult], judge: Judge = TEST) -> list[str]:
    """Each single-fidelity variant's median ``judge`` reward minus the default agent's on the
    seeds both ran, with :func:`median_gap`'s interval and the paired count: whether a variant
    should replace the default is read here."""
    label, value = judge
    rl = {r.seed: value(r) for r in results if r.method == "rl"}
    out = []
    for method in VARIANTS:
        mine = {r.seed: value(r) for r in results if r.method == method and r.full_evaluations is None and r.seed in rl}
        if len(mine) < 2:
            continue
        point, lo, hi = median_gap(mine, {k: rl[k] for k in mine})
        better, worse = sum(mine[k] > rl[k] for k in mine), sum(mine[k] < rl[k] for k in mine)
        out.append(
            f"\n{method} minus rl, median {label}: {point:+.4f} (95 % bootstrap interval over seeds [{lo:+.4f}, {hi:+.4f}]; "
            f"paired by seed: {method} better in {better}, worse in {worse} of {len(mine)})"
        )
    return out


def multi_fidelity_verdicts(results: list[RunResult], judge: Judge = TEST) -> list[str]:
    """Each multi-fidelity variant against the full-only ``rl`` on the seeds both ran: its median
    ``judge`` reward minus rl's (target: >= 0) and the most full evaluations any of its runs
    used against a third of the evaluations (target: at most that)."""
    label, value = judge
    full_only = {r.seed: r for r in results if r.method == "rl"}
    out = []
    for method in VARIANTS:
        runs = [r for r in results if r.method == method and r.full_evaluations is not None and r.seed in full_only]
        if not runs:
            continue
        multi = statistics.median(value(r) for r in runs)
        full = statistics.median(value(full_only[r.seed]) for r in runs)
        most = max(r.full_evaluations or 0 for r in runs)
        third = min(r.evaluations for r in runs) / 3
        better = sum(value(r) > value(full_only[r.seed]) for r in runs)
        worse = sum(value(r) < value(full_only[r.seed]) for r in runs)
        gap, lo, hi = median_gap({r.seed: value(r) for r in runs}, {r.seed: value(full_only[r.seed]) for r in runs})
        out.append(
            f"\n{method} against full-only rl on {len(runs)} seeds: median {label} {multi:+.3f} vs {full:+.3f} "
            f"(difference {gap:+.3f}, 95 % bootstrap interval over seeds [{lo:+.3f}, {hi:+.3f}]; "
            f"paired by seed {better} better, {worse} worse), "
            f"at most {most} full evaluations per run ({'within' if most <= third else 'above'} a third of the evaluations)"
        )
    return out


def alone_against_baselines(results: list[RunResult], judge: Judge = TEST) -> list[str]:
    """:func:`rl_against_baselines` for each agent alone (:data:`ALONES`, the objective agents and the portfolio)
    that ran; one with a whole-episode repair also against the random search of that repair
    (:data:`RANDOM_REPAIRED`)."""
    out = []
    for agent in (*ALONES, OBJECTIVE, OBJECTIVE_CALM, PORTFOLIO, REDRAW, NEXT):
        rule = method_env(EnvConfig(), agent).projection
        same = tuple(name for name, r in RANDOM_REPAIRED.items() if r == rule)
        out += rl_against_baselines(results, judge, agent, (*METHODS[1:], *same))
    return out


def seed_noise(s: Setting, results: list[RunResult], measured: float) -> float:
    """The evaluator noise a seeded agent's margin is judged against: ``measured`` (beside a
    uniform run), else the binomial sampling std of a reward on the search's images at the ILP
    pick's test accuracy (what :func:`evaluator_noise` measures for the deterministic cheap
    evaluator); NaN for a fine-tuning evaluator without a measurement, or without an ILP run."""
    ilp = next((r for r in results if r.method == "ilp"), None)
    if not math.isnan(measured) or s.evaluator == "full" or ilp is None:
        return measured
    accuracy = PolicyMetrics(ilp.test_clean, None, 0.0, None, 0)
    return sampling_std(accuracy, setting_env(s).reward, s.val_samples, s.val_samples)


def default_seeded_reason(s: Setting) -> str | None:
    """Why the default agent (``rl``) counts as seeded on ``s``'s workload, or None where it does not."""
    has_prior = setting_env(s).has_action_prior
    decision = AgentConfig().resolved_decision(has_prior)
    if decision == "objective":
        return "with an action prior it is an objective agent, whose actions contain the sensitivity ILP's answers"
    if decision == PORTFOLIO_DECISION:
        return "without an action prior it is a portfolio whose second half is an objective agent, as rl-portfolio"
    if has_prior:
        return "its first evaluations are the sensitivity ILP's allocations at its prior rungs, and its actions centred on one"
    return None


def seeded_verdicts(s: Setting, results: list[RunResult], noise: float, judge: Judge = TEST) -> list[str]:
    """Where the default agent is seeded, and wherever an objective agent ran, its median margin
    over the ILP against the evaluator's noise.

    Seeded: on a reward without a robustness term the default agent first evaluates the
    sensitivity ILP's allocation at its prior rungs (the ILP baseline's ladder) and centres its
    actions on one; on one with a robustness term it is a portfolio ending in an objective agent,
    whose actions contain the ILP's answers. Issue 11's rule: a seeded agent counts only by beating
    its seed's own reward by more than the evaluator's noise; the agent alone (``rl-alone``) is
    judged beside it."""
    label, value = judge
    ilp = next((r for r in results if r.method == "ilp"), None)
    if ilp is None or math.isnan(noise):
        return []
    out = []
    why = {
        "rl": default_seeded_reason(s),
        OBJECTIVE: "it sets the sensitivity ILP's objective, so its actions contain the ILP's own answers",
        OBJECTIVE_CALM: "as rl-alone-objective",
        PORTFOLIO: "its second half is an objective agent, as rl-alone-objective",
        REDRAW: default_seeded_reason(s),
        NEXT: default_seeded_reason(s),
    }
    for method, reason in why.items():
        runs = [value(r) for r in results if r.method == method]
        if not runs or reason is None:
            continue
        margin = statistics.median(runs) - value(ilp)
        verdict = "above it: counts" if margin > noise else "inside it: does not count"
        out.append(
            f"\n{method} is judged as seeded ({reason}): {method} minus ilp, median {label} {margin:+.4f}, "
            f"evaluator noise {noise:.4f}: {verdict} (the agent alone: {ALONE})"
        )
    return out


def from_json(row: dict[str, Any], where: str) -> RunResult:
    """A run :func:`to_json` wrote; a row that is not one is a one-line error naming the file. Rows
    written before they named their evaluator were all the full mode's, whose setting they get."""
    try:
        model = str(row["model"])
        default = next((s for s in MODES["full"] if s.model == model), None)
        evaluator = row.get("evaluator", default.evaluator if default else None)
        val_samples = row.get("val_samples", default.val_samples if default else None)
        if evaluator is None or val_samples is None:
            raise ValueError(f"{model} is not a model of this benchmark's full mode and the row names no evaluator")
        return RunResult(
            model,
            str(evaluator),
            int(val_samples),
            str(row["method"]),
            int(row["seed"]),
            int(row["evaluations"]),
            float(row["seconds"]),
            float(row["best_reward"]),
            {str(n): (int(w), int(a)) for n, (w, a) in row["best_policy"].items()},
            tuple(float(v) for v in row["rewards"]),
            float(row["test_reward"]),
            float(row["test_clean"]),
            None if row["test_robust"] is None else float(row["test_robust"]),
            None if row["full_evaluations"] is None else int(row["full_evaluations"]),
            None if row.get("crossfit_reward") is None else float(row["crossfit_reward"]),  # older rows have none
            None if row.get("distinct") is None else int(row["distinct"]),
            float(row.get("finetune_lr", HISTORIC_LR)),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SystemExit(f"{where}: not a search-quality result row ({type(exc).__name__}: {exc})") from None


def read_results(path: Path) -> list[RunResult]:
    """The result rows of a results.json this benchmark wrote; anything else is a one-line error."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read results ({exc}); give directories a run of this benchmark wrote") from None
    if not isinstance(rows, list):
        raise SystemExit(f"{path}: expected a list of result rows")
    return [from_json(row, str(path)) for row in rows]


def invocation(settings: tuple[Setting, ...], methods: tuple[str, ...], workers: int) -> dict[str, Any]:
    """What an ``--out`` is started with, as JSON (a worker count is part of it: the agent's log
    depends on it)."""
    doc = {
        "format": INVOCATION_FORMAT,
        "version": INVOCATION_VERSION,
        "settings": [dataclasses.asdict(s) for s in settings],
        "methods": list(methods),
        "workers": workers,
    }
    return json.loads(json.dumps(doc))


def resumed(root: Path, asked: dict[str, Any]) -> dict[RunKey, RunResult]:
    """The finished runs of the benchmark ``root`` holds, when it was started with ``asked``."""
    path = root / INVOCATION
    try:
        started = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(
            f"{path}: cannot read the arguments {root} was started with ({exc}); "
            "--resume continues an --out this benchmark started"
        ) from None
    if started != asked:
        differ = [k for k in ("settings", "methods", "workers") if not isinstance(started, dict) or started.get(k) != asked[k]]
        raise SystemExit(
            f"{root} was started with other {', '.join(differ) or 'arguments'}; resume with the same --quick / --full, "
            "--models, --evaluations, --seeds, --methods and --workers"
        )
    results = root / RESULTS
    return {run_key(r): r for r in (read_results(results) if results.exists() else [])}


def merged(dirs: list[Path]) -> str:
    """The tables of runs made by several invocations (e.g. seeds split over two processes), from
    their results.json files; the evaluator noise, measured only beside a uniform run, is left out."""
    runs = [r for d in dirs for r in read_results(d / RESULTS)]
    seen: set[RunKey] = set()
    for r in runs:
        key = run_key(r)
        if key in seen:
            raise SystemExit(f"{r.model}: {r.method} seed {r.seed} appears twice in the merged directories; merge each run once")
        seen.add(key)
    out = []
    for key in dict.fromkeys(workbench_key(r) for r in runs):
        mine = [r for r in runs if workbench_key(r) == key]
        seeds = tuple(sorted({r.seed for r in mine}))
        setting = Setting(key[0], key[1], max(r.evaluations for r in mine), seeds, key[2], finetune_lrs=(key[3],))
        out.append(summary(setting, mine, math.nan))
    return "\n".join(out)


def to_json(r: RunResult) -> dict[str, Any]:
    return {
        "model": r.model,
        "evaluator": r.evaluator,
        "val_samples": r.val_samples,
        "method": r.method,
        "seed": r.seed,
        "evaluations": r.evaluations,
        "seconds": r.seconds,
        "best_reward": r.best_reward,
        "best_policy": {n: list(p) for n, p in r.best_policy.items()},
        "test_reward": r.test_reward,
        "test_clean": r.test_clean,
        "test_robust": r.test_robust,
        "full_evaluations": r.full_evaluations,
        "crossfit_reward": r.crossfit_reward,
        "distinct": r.distinct,
        "finetune_lr": r.finetune_lr,
        "rewards": list(r.rewards),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="digits CNN and ResNet-20 with the cheap evaluator, few evaluations")
    mode.add_argument("--full", action="store_true", help="the issue's benchmark (default): 4 models, 300 evaluations, 3 seeds")
    p.add_argument("--out", default="runs/bench-search-quality", help="where run directories and results.json go")
    p.add_argument("--models", nargs="+", default=None, help="restrict to these models")
    p.add_argument("--evaluations", type=int, default=None, help="override the mode's evaluations per run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the mode's seeds")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=(*METHODS, *VARIANTS), help="methods to run")
    p.add_argument("--variants", action="store_true", help="also run rl-sens and rl-multi")
    p.add_argument("--workers", type=int, default=1, help="evaluation workers (Ray) shared by every run")
    p.add_argument(
        "--finetune-lrs",
        type=float,
        nargs="+",
        default=(),
        metavar="LR",
        help="full evaluator: candidate DQ fine-tune rates, one chosen per model before its runs (default: haq's "
        "EvalConfig.finetune_lrs; one rate: that rate); rows record the rate and tables keep rates apart",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="OUT",
        help="print the tables of earlier runs' --out directories together",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the benchmark in --out (same arguments): finished runs are kept, one a kill cut off runs again",
    )
    ns = p.parse_args(argv)
    if ns.merge:
        print(merged(ns.merge))
        return 0
    if ns.evaluations is not None and ns.evaluations < 1:
        p.error(f"--evaluations must be >= 1, got {ns.evaluations}")
    torch.set_num_threads(1)
    settings = tuple(
        dataclasses.replace(
            s, evaluations=ns.evaluations or s.evaluations, seeds=tuple(ns.seeds or s.seeds), finetune_lrs=tuple(ns.finetune_lrs)
        )
        for s in MODES["quick" if ns.quick else "full"]
        if ns.models is None or s.model in ns.models
    )
    methods = tuple(dict.fromkeys([*ns.methods, *(VARIANTS if ns.variants else ())]))
    root = Path(ns.out)
    asked = invocation(settings, methods, ns.workers)
    done: dict[RunKey, RunResult] = {}
    if ns.resume:
        done = resumed(root, asked)
    else:
        for s in settings:
            if any((root / s.model).glob(f"*/{CONFIG_FILE}")):
                p.error(f"{root / s.model} already holds runs; choose another --out, or --resume the benchmark that wrote them")
        atomic_write_text(root / INVOCATION, json.dumps(asked, indent=2) + "\n")
    results: list[RunResult] = list(done.values())

    def sink(r: RunResult) -> None:
        results.append(r)
        atomic_write_text(root / RESULTS, json.dumps([to_json(x) for x in results], indent=2) + "\n")
        log(f"  test reward {r.test_reward:+.4f} (best search {r.best_reward:+.4f}), {r.evaluations} evals in {r.seconds:.1f} s")

    start = time.perf_counter()
    for s in settings:
        print(bench_setting(s, methods, ns.workers, root, sink, done), flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; run directories and {RESULTS} in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
