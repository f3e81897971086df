"""Prior rungs: where a centred agent starts, chosen by evaluating the sensitivity allocation at a
few budgets before the agent exists.

The sensitivity ILP answers "the most accurate policy for a budget"; the reward also pays for a
lower cost, and which point of the estimated accuracy / cost front it prefers only an evaluation
can tell (ResNet-20, Bit Fusion, budget 0.5: the full-budget allocation scored −0.199 at 100 % of
the budget, the same accuracy at 52 % of it −0.104). So the search evaluates the allocation at
``AgentConfig.prior_rungs`` budgets down to ``prior_floor`` × budget, logs each as an episode
(``extra.prior_rung``: the rung's fraction of the budget), and centres the agent's actions on one
of them (``AgentConfig.prior_centre``: by default the cheapest whose reward is within the
sampling noise of the best's). The rungs need no checkpoint: a resume re-reads them from the log
and evaluates the ones missing, so the centre, and everything the agent does from it, is what an
uninterrupted run had.
"""

from __future__ import annotations

import dataclasses

from haq.core.errors import InternalError, RunDirError
from haq.core.types import BitPair, Log
from haq.problem.allocation import budget_ladder, estimated_error, least_cost_at_error, sensitivity_rungs
from haq.problem.config import EnvConfig
from haq.problem.problem import SearchProblem
from haq.problem.reward import sampling_std
from haq.runs.candidates import Candidate, log_candidates
from haq.runs.checkpoint import RunStore
from haq.runs.progress import OnProgress
from haq.runs.rundir import EpisodeRecord
from haq.search.config import AgentConfig

RUNG = "prior_rung"
"""Key of a rung episode's ``extra``: the budget fraction its allocation was solved for."""
CENTRE = "centre_fraction"
"""Key of a transfer's zero-shot ``extra``: the budget fraction its source's agent was centred on."""
RUN_SHARE = 10
"""Rungs take at most one in this many of a run's episodes, so a short run is mostly the agent's."""


def centre_on_rung(
    problem: SearchProblem, agent: AgentConfig, store: RunStore, episodes: int, progress: OnProgress | None, log: Log | None
) -> SearchProblem:
    """Evaluate the rungs not yet logged (``agent.prior_rungs``, at most a tenth of ``episodes``)
    and return ``problem`` with its action prior moved to the allocation of the rung
    :func:`centre_rung` chooses.

    ``agent`` is resolved (:meth:`AgentConfig.for_problem`); with fewer than two rungs, without
    a prior, or once the agent has checkpointed without rungs in the log, ``problem`` is returned
    as it is."""
    count = rung_count(agent, episodes)
    if count < 2 or problem.prior is None:
        return problem
    if problem.sensitivity is None:
        raise InternalError("a problem with a sensitivity prior was built without its sensitivity")
    logged = [r for r in store.records if RUNG in r.extra]
    if store.checkpoint is None and len(logged) == len(store.records):
        ladder = budget_ladder(problem.budget_model, count, agent.prior_floor)
        target = problem.budget.target
        rungs = sensitivity_rungs(problem.budget_model, problem.sensitivity, ladder)
        seen = {_pairs(r, problem) for r in logged}
        todo = [(t, pairs) for t, pairs in rungs if pairs not in seen]
        if todo and log:
            log(f"prior rungs: evaluating the sensitivity allocation at {len(todo)} budget(s) before the agent starts")
        candidates = [Candidate(pairs, {RUNG: t / target}) for t, pairs in todo]
        logged += log_candidates(problem, store, candidates, store.append, episodes, progress)
    centre = centre_rung(logged, agent, problem.config, str(store.path))
    if centre is None:
        return problem
    fraction = _fraction(centre.extra[RUNG], RUNG, centre.episode, str(store.path))
    if log:
        log(f"prior rungs: centring on the allocation at {fraction:.2f} x budget (reward {centre.reward:+.4f})")
    return dataclasses.replace(problem, prior=_pairs(centre, problem))


def rung_count(agent: AgentConfig, episodes: int) -> int:
    """How many rungs a run of ``episodes`` evaluates (``agent.prior_rungs``, at most a tenth of
    them); fewer than two means none."""
    return min(agent.prior_rungs, episodes // RUN_SHARE)


def _pairs(record: EpisodeRecord, problem: SearchProblem) -> tuple[BitPair, ...]:
    """A logged policy as one (w, a) pair per layer, in the problem's layer order."""
    pairs = record.pairs(problem.layer_names)
    if pairs is None:
        raise InternalError(f"episode {record.episode}'s policy does not cover {problem.config.workload.model}'s layers")
    return pairs


def centre_rung(records: list[EpisodeRecord], agent: AgentConfig, env: EnvConfig, where: str) -> EpisodeRecord | None:
    """The rung a run (searched with ``agent`` on ``env``) centres its agent on, by
    ``agent.prior_centre``; ``None`` without rungs. ``cheapest_tied``: the rung with the lowest
    budget fraction among those whose reward is within one standard error of the best rung's
    (:func:`haq.problem.reward.sampling_std` on ``env``'s search images), ties to the better reward."""
    rungs = [r for r in records if RUNG in r.extra]
    if not rungs:
        return None
    best = max(rungs, key=lambda r: r.reward)
    if agent.prior_centre == "best":
        return best
    ev = env.evaluation
    noise = sampling_std(best.metrics, env.reward, ev.val_samples, min(ev.robust_samples, ev.val_samples))
    tied = [r for r in rungs if r.reward >= best.reward - noise]
    return min(tied, key=lambda r: (_fraction(r.extra[RUNG], RUNG, r.episode, where), -r.reward))


def centre_fraction(records: list[EpisodeRecord], agent: AgentConfig, env: EnvConfig, where: str) -> float | None:
    """The budget fraction a run's agent acts around: its centre rung's (:func:`centre_rung`), or
    the one a transfer inherited from its source; ``None`` for an agent centred on the
    full-budget allocation. A logged fraction that is not a number in (0, 1] is a
    :class:`RunDirError` naming ``where``."""
    centre = centre_rung(records, agent, env, where)
    if centre is not None:
        return _fraction(centre.extra[RUNG], RUNG, centre.episode, where)
    inherited = [r for r in records if CENTRE in r.extra]
    return _fraction(inherited[0].extra[CENTRE], CENTRE, inherited[0].episode, where) if inherited else None


def _fraction(value: object, key: str, episode: int, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise RunDirError(f"{where}: episode {episode}'s '{key}' must be a budget fraction in (0, 1], got {value!r}")
    return float(value)


def centre_at(problem: SearchProblem, fraction: float) -> SearchProblem:
    """``problem`` with its action prior moved to the sensitivity allocation at ``fraction`` x its
    budget, unevaluated. Why: an agent trained around its centre rung acts in that rung's frame; on
    a new device (or model) the same fraction's allocation rebuilds the frame without spending
    evaluations on rungs."""
    if problem.prior is None or problem.sensitivity is None:
        return problem
    [(_, pairs)] = sensitivity_rungs(problem.budget_model, problem.sensitivity, [fraction * problem.budget.target])
    return dataclasses.replace(problem, prior=pairs)


def centre_at_accuracy(problem: SearchProblem, policy: dict[str, BitPair]) -> tuple[SearchProblem, float]:
    """``problem`` with its action prior moved to the least-cost sensitivity allocation estimated to
    be as accurate as ``policy`` (same model: the estimated error is the model's, not the
    device's), and that allocation's budget fraction; unevaluated. Why: the source search found
    which accuracy is worth its cost; a fraction of another device's budget buys another accuracy
    (digits CNN centred at half of Bismo-edge's budget, moved to half of Bismo-cloud's: reward
    -3.03 against -0.20 at the same estimated accuracy)."""
    if problem.prior is None or problem.sensitivity is None:
        raise InternalError("centring on an accuracy needs a problem with a sensitivity prior")
    fraction, pairs = least_cost_at_error(problem.budget_model, problem.sensitivity, estimated_error(problem.sensitivity, policy))
    return dataclasses.replace(problem, prior=pairs), fraction
