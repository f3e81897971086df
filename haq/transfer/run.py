"""A transfer run: zero-shot rollout of a trained agent on a new device, then fine-tuning.

The run directory has the search's format (``haq.runs.rundir``) with ``kind: "transfer"``
and a ``transfer`` section (the :class:`TransferConfig` and the source run), so ``haq plot``,
the benchmarks and a later transfer (``--from`` this run) read it like any search.

Episode 0 is the zero-shot episode: the source actor, deterministic, on the new device's
environment, through the reward baseline when the agent trains with one. It is committed
through the same store a search commits to (:class:`~haq.search.checkpoint.AgentStore`), and
the fine-tuning episodes 1..N are the search loop itself (:func:`haq.search.run.train`)
continuing from that checkpoint. So crash-safety and ``--resume`` are the search's: no gap, no
duplicate.

A source agent that acted around its best prior rung (:mod:`haq.search.rungs`) acts on the new
device around a sensitivity allocation, solved, not evaluated: its actions are offsets from that
frame. On the same model, the least-cost allocation estimated to be as accurate as the source's
rung (:func:`~haq.search.rungs.centre_at_accuracy`); on another model, whose estimated errors are
on another scale, the allocation at the same fraction of the new budget. Transferred in the
full-budget frame instead, it met `bench/transfer.py`'s quarter-episodes target in 52 of 162
comparisons; at the same fraction, 77.

An agent that sets the ILP's objective (``agent.decision = "objective"``) transfers to the same
model only (its action is one error weight per layer of its model): its stack is the search's
(:class:`~haq.search.run.AgentEnv`), so the new device's costs decode the zero-shot action, and it
reuses none of the source's evaluations (the same objective decodes to other bits there).

The caller builds the target problem (``haq.jobs.problems.make_problem``) from
:func:`transfer_env`, the environment the source run's settings and the transfer's derive.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from haq.core import config as serial
from haq.core.errors import ConfigError, InternalError
from haq.core.types import Log
from haq.evaluation.config import EvalConfig
from haq.problem.config import BudgetConfig, EnvConfig
from haq.problem.finetune_lr import built_from
from haq.problem.problem import SearchProblem
from haq.runs.progress import OnProgress, Progress
from haq.runs.proposer import Proposer, RunResult
from haq.runs.rundir import EpisodeRecord, RunDir
from haq.search.checkpoint import BATCH, UPDATE_PENDING, AgentStore, agent_description
from haq.search.config import WHOLE_DECISIONS, SearchConfig
from haq.search.run import AgentEnv, prior_section, train
from haq.search.rungs import CENTRE, centre_at, centre_at_accuracy, centre_fraction, centre_rung, rung_count
from haq.transfer.agent import ActingEnv, load_on, prepare_finetune
from haq.transfer.config import BEST_REUSED_START, PREDICTED_START, TransferConfig
from haq.transfer.experience import clone_actor, learn_from_replay, replay, reprice, why_not_reused
from haq.transfer.source import SourceRun, load_source
from haq.transfer.start import PredictedStart, choose_zero_shot, predicted_start
from haq.workload import WorkloadConfig

RUN_KIND = "transfer"
ZERO_SHOT = "zero-shot"
REUSED = "reused_evaluations"
"""Key of the zero-shot episode's ``extra``: how many of the source's evaluations the agent learned from first."""


def target_env_config(source: EnvConfig, cfg: TransferConfig) -> EnvConfig:
    """The source's environment with the new device (and model / budget / evaluator if given)."""
    workload = source.workload
    if cfg.model is not None or cfg.dataset is not None or cfg.input_size is not None:
        model = cfg.model or workload.model
        same_model = model == workload.model
        workload = WorkloadConfig(
            model=model,
            dataset=cfg.dataset or (workload.dataset if same_model else None),
            data_root=workload.data_root,
            checkpoint=workload.checkpoint if same_model else None,
            seed=workload.seed,
            train_epochs=workload.train_epochs if same_model else None,
            finetune_epochs=workload.finetune_epochs if same_model else None,
            input_size=cfg.input_size or (workload.input_size if same_model else None),
            input_shape=workload.input_shape if same_model and cfg.input_size is None else None,
            workers=workload.workers,
        )
    budget = source.budget
    if cfg.budget_ratio is not None or cfg.budget_absolute is not None:
        budget = BudgetConfig(metric=budget.metric, ratio=cfg.budget_ratio or budget.ratio, absolute=cfg.budget_absolute)
    elif budget.absolute is not None and budget.metric != "size" and cfg.table != source.table:
        raise ConfigError(
            f"the source run's budget is absolute ({budget.absolute:g} {budget.metric} units on {source.table}), which means "
            f"nothing on {cfg.table}; pass --budget RATIO or --budget-absolute VALUE for the new device"
        )
    evaluation: EvalConfig = source.evaluation
    if cfg.evaluator is not None:
        evaluation = dataclasses.replace(evaluation, kind=cfg.evaluator)
    return dataclasses.replace(source, workload=workload, table=cfg.table, budget=budget, evaluation=evaluation)


def fine_tune_config(source: SearchConfig, cfg: TransferConfig, algo: str) -> SearchConfig:
    """The search settings the fine-tuning runs under (episode 0 is the zero-shot one), for the
    source agent's actual algorithm ``algo`` (its config may say ``auto``)."""
    decision, own = source.agent.decision, source.env.workload.model
    if decision == "policy":
        raise ConfigError(
            "the source agent decides every layer's bits in one step (agent.decision = 'policy'), its actions bins of its "
            "own model on its own device; transfer needs an agent that decides one layer at a time ('layer') or sets "
            "the ILP's objective ('objective')"
        )
    if decision == "objective" and cfg.model is not None and cfg.model != own:
        raise ConfigError(
            f"the source agent sets the ILP's objective (agent.decision = 'objective'), one error weight per layer of "
            f"{own}; it transfers to {own} on another device, not to {cfg.model}"
        )
    agent = dataclasses.replace(
        source.agent,
        algo=algo,
        start_at_centre=False,
        warmup_episodes=0,
        noise_sigma=cfg.noise_sigma,
        noise_decay=cfg.noise_decay,
    )
    return SearchConfig(env=target_env_config(source.env, cfg), agent=agent, episodes=cfg.episodes + 1, seed=cfg.seed)


def transfer_env(cfg: TransferConfig) -> EnvConfig:
    """The environment the transfer runs in: build its problem from this, then :func:`run_transfer`."""
    return target_env_config(load_source(cfg.source).config.env, cfg)


class TransferStore(AgentStore):
    """The agent store of a transfer run: a resume also compares the transfer's own settings."""

    kind = RUN_KIND

    def __init__(self, path: str | Path, settings: Any, description: Mapping[str, Any], transfer: Mapping[str, Any]) -> None:
        super().__init__(path, settings, description)
        self.transfer = dict(transfer)

    def _check_settings(self, doc: Mapping[str, Any]) -> None:
        self._check_kind(doc)
        section = doc.get("transfer")
        stored = section.get("config", {}) if isinstance(section, Mapping) else {}
        self._compare(_resolved_source(_upgraded(stored)), _resolved_source(self.transfer))
        super()._check_settings(doc)


class Transfer(Proposer[TransferStore]):
    """Transfers ``cfg.source``'s agent to the problem's device: zero-shot episode, then ``cfg.episodes`` of fine-tuning."""

    def __init__(self, cfg: TransferConfig) -> None:
        self.cfg = cfg
        self.source: SourceRun | None = None
        self.search_cfg: SearchConfig | None = None
        self.fraction: float | None = None  # the budget fraction the agent acts around: the source's, then the new device's
        self.records: list[EpisodeRecord] = []  # the source's logged episodes

    def _episodes(self) -> int:
        return self.cfg.episodes + 1  # the zero-shot episode, then the fine-tuning

    def _open(self, problem: SearchProblem, out_dir: str | Path) -> TransferStore:
        source = load_source(self.cfg.source)
        search_cfg = fine_tune_config(source.config, self.cfg, str(source.meta["algo"]))
        if Path(out_dir).resolve() == source.path.resolve():
            raise ConfigError(f"--out {out_dir} is the source run itself; write the transfer to another directory")
        if not built_from(problem.config, search_cfg.env):
            raise ConfigError("the given problem was built from a different environment config than this transfer derives")
        self.source, self.search_cfg = source, search_cfg
        self.records = RunDir(source.path).read_episodes()
        self.fraction = centre_fraction(self.records, source.config.agent, source.config.env, f"--from {source.path}")
        return TransferStore(out_dir, search_cfg, agent_description(problem, search_cfg), serial.to_dict(self.cfg))

    def _derived(self, problem: SearchProblem) -> dict[str, Any]:
        source, _ = self._opened()
        return {**prior_section(problem), "transfer": {"config": serial.to_dict(self.cfg), "source": source.describe()}}

    def _details(self) -> dict[str, Any]:
        return {"source": self._opened()[0].describe()}

    def _propose(self, problem: SearchProblem, store: TransferStore, progress: OnProgress | None, log: Log | None) -> None:
        resuming = store.checkpoint is not None or bool(store.records)
        problem = self._centred(problem)
        if not resuming:
            self._zero_shot(problem, store, progress, log)
        train(
            store,
            self._opened()[1],
            problem,
            progress,
            log if resuming else None,
            fresh=lambda agent_env, _: self._prepared_source(agent_env, problem),
        )

    def _centred(self, problem: SearchProblem) -> SearchProblem:
        """``problem`` in the frame the source's agent acted in, moved to the new device (see the
        module docstring); ``self.fraction`` becomes that frame's fraction of the new budget."""
        if self.fraction is None or problem.prior is None:
            return problem
        source = self._opened()[0]
        rung = centre_rung(self.records, source.config.agent, source.config.env, f"--from {source.path}")
        if rung is not None and source.config.env.workload == problem.config.workload:
            problem, self.fraction = centre_at_accuracy(problem, dict(rung.policy))
            return problem
        return centre_at(problem, self.fraction)

    def _zero_shot(self, problem: SearchProblem, store: TransferStore, progress: OnProgress | None, log: Log | None) -> None:
        """Roll the source actor out on the new device, after it learned from the source's re-priced
        evaluations when they hold there; commit it (with the prepared agent) as episode 0, noting
        the budget fraction its actions are centred on and how many evaluations it reused."""
        source, search_cfg = self._opened()
        fraction = self.fraction
        acting = ActingEnv.build(problem, search_cfg.agent.for_problem(problem.prior is not None))
        model = load_on(source.checkpoint, acting.env)
        reused, average, noted = self._reuse(model, problem, problem.workers, log)
        if acting.baseline is not None:
            acting.baseline.average = average
        if log:
            log(
                f"zero-shot: {source.meta.get('algo')} agent from {source.path} ({source.model} on {source.table}) "
                f"on {search_cfg.env.workload.model} / {problem.table.name}"
                + (f", centred on the allocation at {fraction:.3f} x budget (its source's frame)" if fraction is not None else "")
            )
        extra: dict[str, Any] = {
            "phase": ZERO_SHOT,
            "source_table": source.table,
            "source_model": source.model,
            REUSED: reused,
            **noted,
        }
        if fraction is not None:
            extra[CENTRE] = fraction
        record = acting.rollout(model, 0, extra)
        model.set_random_seed(search_cfg.seed + 1)  # fine-tuning draws as a fresh agent after one episode would
        store.agent = model
        state = {"baseline": getattr(acting.baseline, "average", None), UPDATE_PENDING: False, BATCH: problem.workers}
        store.commit(record, state)
        if progress is not None:
            progress(Progress.after(record, record, search_cfg.episodes, False))

    def _prepared_source(self, agent_env: VecEnv, problem: SearchProblem) -> BaseAlgorithm:
        """The source agent ready to fine-tune on ``agent_env``: what fine-tuning restarts from when the
        run directory lost its checkpoint (the logged episodes, zero-shot included, stand); it
        learns from the source's re-priced evaluations again, as the zero-shot agent did."""
        source, _ = self._opened()
        model = load_on(source.checkpoint, agent_env)
        self._reuse(model, problem, agent_env.num_envs, None, agent_env)
        return model

    def _reuse(
        self, model: BaseAlgorithm, problem: SearchProblem, batch: int, log: Log | None, venv: VecEnv | None = None
    ) -> tuple[int, float | None, dict[str, Any]]:
        """Prepare ``model`` to fine-tune ``batch`` episodes at a time and, where the source's
        evaluations hold on ``problem`` (:mod:`haq.transfer.experience`), replay them through
        ``venv`` (by default a fresh stack of the fine-tuning's environments), learn from them and
        fit the actor to the zero-shot policy (:attr:`TransferConfig.zero_shot`). Returns the
        episodes replayed, the reward baseline's average after them and what the zero-shot
        episode's ``extra`` notes about its policy."""
        source, search_cfg = self._opened()
        agent = search_cfg.agent.for_problem(problem.prior is not None)
        episode_len = 1 if agent.decision in WHOLE_DECISIONS else len(problem.layer_names)
        why = self._why_not_reused(model, problem)
        repriced = reprice(self.records, problem) if why is None else []
        steps = self.cfg.clone_steps
        start = self._predicted(problem) if why is None and steps > 0 else None
        prepare_finetune(
            model,
            episode_len,
            search_cfg.episodes + len(repriced),
            agent.noise_sigma,
            agent.noise_decay,
            search_cfg.seed,
            batch,
            agent.gradient_steps,
        )
        if not repriced and start is None:
            if log:
                log(f"the source's evaluations are not reused: {why or 'none of them fits the new budget'}")
            return 0, None, {}
        stack = AgentEnv.build(problem, agent, batch) if venv is None and repriced else None
        model.set_random_seed(search_cfg.seed)
        replayed = replay(model, venv if stack is None else stack.agent_env, problem, repriced) if repriced else 0
        updates = learn_from_replay(model, replayed, agent.gradient_steps if agent.gradient_steps > 0 else episode_len, steps > 0)
        best = max(repriced, key=lambda r: r.scored.reward) if repriced else None
        zero = choose_zero_shot(start, best)
        if zero is None:
            raise InternalError("a reusing transfer found neither a reused nor a predicted policy")
        exact = clone_actor(model, problem, zero.pairs, steps)
        if log:
            actor = f"actor fitted to {zero.description}" if steps > 0 else "actor learning from the critic"
            inexact = "" if exact or steps == 0 else f", inexactly after {steps} steps"
            log(
                f"reused {replayed} of the source's {len(self.records)} evaluations, re-priced on {problem.table.name} "
                f"(the others: repeated, unsupported there or over its budget): {updates} critic updates, {actor}{inexact}"
            )
        noted = zero.extra if steps > 0 else {}  # an actor left to the critic was fitted to nothing
        return replayed, stack.baseline.average if stack is not None and stack.baseline is not None else None, noted

    def _predicted(self, problem: SearchProblem) -> PredictedStart | None:
        """The allocation predicted best on ``problem`` from the source's accuracies, when the
        transfer starts from predictions and the source's agent had prior rungs to mirror."""
        config = self._opened()[0].config
        rungs = rung_count(config.agent, config.episodes)
        if self.cfg.zero_shot != PREDICTED_START or problem.prior is None or rungs < 2:
            return None
        return predicted_start(problem, self.records, rungs, config.agent.prior_floor)

    def _why_not_reused(self, model: BaseAlgorithm, problem: SearchProblem) -> str | None:
        if self._opened()[1].agent.decision == "objective":
            return "an objective agent's actions decode to other bits under the new device's costs"
        if not self.cfg.reuse_source:
            return "--no-reuse"
        if not isinstance(model, OffPolicyAlgorithm):
            return f"a {type(model).__name__} agent learns on-policy"
        return why_not_reused(self._opened()[0].config.env, problem.config)

    def _opened(self) -> tuple[SourceRun, SearchConfig]:
        if self.source is None or self.search_cfg is None:
            raise InternalError("a transfer's source is read when its run opens; call run()")
        return self.source, self.search_cfg


def run_transfer(
    cfg: TransferConfig,
    problem: SearchProblem,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: OnProgress | None = None,
    log: Log | None = None,
) -> RunResult:
    """Transfer ``cfg.source``'s agent to ``problem`` (built from :func:`transfer_env`): zero-shot
    episode 0, then ``cfg.episodes`` of fine-tuning; ``details["source"]`` describes the source.

    Errors (not a search run, another observation layout, a problem from another environment)
    are raised before anything is written.
    """
    return Transfer(cfg).run(problem, out_dir, resume=resume, progress=progress, log=log)


def _upgraded(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """Stored transfer settings as today's fields read them: a run written before
    ``zero_shot`` existed started from the best reused policy."""
    if "zero_shot" not in settings:
        return {**settings, "zero_shot": BEST_REUSED_START}
    return settings


def _resolved_source(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Transfer settings with the source path made absolute, so ``--from run`` and ``--from ./run`` agree."""
    out = dict(settings)
    if isinstance(out.get("source"), str):
        out["source"] = str(Path(out["source"]).resolve())
    return out
