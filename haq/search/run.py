"""The RL search: a stable-baselines3 agent proposes policies in the environment, resumable after
any crash through the run-directory core (:mod:`haq.runs.checkpoint`).

When an episode finishes, the callback commits it: a checkpoint (agent, replay buffer, RNG
states, and a state holding that episode's record and the reward baseline's average) is swapped
in first, the log line is appended second. The episode's gradient update comes after the
checkpoint, so a resume makes it before anything else; with the RNG states restored, a search
killed at any point and resumed logs the same episodes as one never interrupted.

With ``problem.workers`` = N > 1 the agent collects N episodes at a time
(:class:`~envs.vector.MixedPrecisionVecEnv`): their N policies are evaluated concurrently, the
batch is committed with one checkpoint (:meth:`~haq.runs.checkpoint.RunStore.commit_batch`),
then the agent learns from all of them, off-policy agents while the next batch is scored
(:mod:`haq.search.overlap`). The batch size is stored in the checkpoint and kept by a resume
whatever its number of workers, so the same seed and batch give the same log.

A portfolio (``AgentConfig.decision = "portfolio"``) runs its agents one after the other through
the same loop, each a fresh agent once the one before has logged its share; a checkpoint records
which of them it holds (``phase``), so a resume continues that agent and never hands one agent's
checkpoint to the next.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from envs.vector import MixedPrecisionVecEnv
from haq.core.errors import ConfigError, RunDirError
from haq.core.types import Log
from haq.evaluation.evaluators import PolicyKey, policy_key
from haq.evaluation.metrics import PolicyMetrics
from haq.problem.finetune_lr import built_from
from haq.problem.problem import SearchProblem
from haq.problem.sensitivity import Sensitivity
from haq.runs.final_pick import ASKED
from haq.runs.progress import OnProgress, Progress
from haq.runs.proposer import Proposer, RunResult
from haq.runs.replay import replay
from haq.runs.rundir import EpisodeRecord
from haq.runs.sensitivity_file import write_sensitivity
from haq.runs.tracking import agent_logger
from haq.search.agents import hold_actor, make_agent, replay_capacity, set_actor_every
from haq.search.baseline import VecRewardBaseline
from haq.search.checkpoint import BATCH, PHASE, UPDATE_PENDING, AgentStore, agent_description, checkpoint_phase
from haq.search.config import AgentConfig, SearchConfig
from haq.search.credit import VecCostCredit
from haq.search.imitation import ELITE, EliteEpisode, EliteEpisodes, EpisodeTraces, SelfImitation
from haq.search.noise import BatchNoise, DecayingTruncatedNormalNoise
from haq.search.objective import ObjectiveDecoder
from haq.search.overlap import DeferredUpdates
from haq.search.redraw import Draw, Redraws
from haq.search.rungs import RUNG, centre_on_rung
from haq.search.snapshot import TrainingState
from haq.search.whole_policy import DECODED, REDRAWN, VecWholePolicy

ANNOTATIONS = ("fidelity", "cheap_reward", DECODED, REDRAWN, ASKED)
"""What an episode record keeps of how its policy was scored (:meth:`haq.problem.fidelity.Scored.annotations`),
what it was decoded from (an objective agent's action), how often a repeat was replaced and the
repeat it first asked for (which the final pick counts)."""


class RLSearch(Proposer[AgentStore]):
    """Searches bit widths with ``config.agent`` for ``config.episodes`` episodes."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def _open(self, problem: SearchProblem, out_dir: str | Path) -> AgentStore:
        if not built_from(problem.config, self.config.env):
            raise ConfigError("the given problem was built from a different environment config than the search config")
        return AgentStore(out_dir, self.config, agent_description(problem, self.config))

    def _episodes(self) -> int:
        return self.config.episodes

    def _propose(self, problem: SearchProblem, store: AgentStore, progress: OnProgress | None, log: Log | None) -> None:
        has_prior = problem.prior is not None
        phases = self.config.agent.phases(self.config.episodes, has_prior)
        resolved = [m.for_problem(has_prior) for m, _ in phases]
        if log and self.config.agent.redraws and not any(a.replaces_repeats for a in resolved):
            agents = ", then ".join(f"{a.decision} ({a.algo})" for a in resolved)
            log(
                f"redraws = {self.config.agent.redraws} is ignored: it replaces an off-policy objective agent's repeats, "
                f"and this search runs {agents} (decision objective or portfolio, not ppo)"
            )
        for phase, (member, end) in enumerate(phases):
            if len(store.records) >= end:
                continue
            if log and len(phases) > 1:
                first = len(store.records) + 1
                log(f"portfolio: agent {phase + 1} of {len(phases)} ({member.decision}) proposes episodes {first}-{end}")
            config = dataclasses.replace(self.config, agent=member, episodes=end)
            centred = centre_on_rung(problem, resolved[phase], store, end, progress, log)
            train(store, config, centred, progress, log, phase=phase, total=self.config.episodes)

    def _derived(self, problem: SearchProblem) -> dict[str, Any]:
        return prior_section(problem)


def prior_section(problem: SearchProblem) -> dict[str, Any]:
    """config.json's record of the full-budget allocation actions are centred on (``EnvConfig.prior``), if
    any; with prior rungs (:mod:`haq.search.rungs`) the centre is a rung episode in the log
    (:func:`~haq.search.rungs.centre_rung`)."""
    if problem.prior is None:
        return {}
    return {"action_prior": {name: list(pair) for name, pair in zip(problem.layer_names, problem.prior)}}


def run_search(
    config: SearchConfig,
    problem: SearchProblem,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: OnProgress | None = None,
    log: Log | None = None,
) -> RunResult:
    """Search on ``problem`` (built from ``config.env``), logging to ``out_dir``.

    ``resume`` continues a run in ``out_dir`` written with the same settings (``episodes`` may
    grow); without it an existing run there is an error.
    """
    return RLSearch(config).run(problem, out_dir, resume=resume, progress=progress, log=log)


def train(
    store: AgentStore,
    config: SearchConfig,
    problem: SearchProblem,
    progress: OnProgress | None,
    log: Log | None,
    fresh: Callable[[gym.Env, int], BaseAlgorithm] | None = None,
    *,
    phase: int = 0,
    total: int | None = None,
) -> None:
    """Let the agent act until ``store`` holds ``config.episodes`` episodes.

    ``store`` is restored. With a checkpoint, the agent continues exactly as it would have without
    the interruption: its state, replay buffer, RNG states, exploration noise and the reward
    baseline's average come from the checkpoint, and the gradient update the checkpointed episode
    still owed is made first. Without one, every logged episode stands and a fresh agent learns
    the rest: ``fresh(agent_env, episode_len)`` builds it (the transfer's prepared source agent),
    by default a new agent; either is seeded with ``config.seed`` plus the episodes already
    logged. The transfer calls this after committing its zero-shot episode, so its fine-tuning
    is this loop. ``phase`` is the agent's place in a portfolio (a checkpoint of another phase is
    not its own: it starts fresh), ``total`` the run's episodes as progress shows them (by
    default ``config.episodes``).
    """
    config = dataclasses.replace(config, agent=config.agent.for_problem(problem.prior is not None))
    checkpoint = store.checkpoint
    if checkpoint is not None and checkpoint_phase(checkpoint.path, checkpoint.state) != phase:
        checkpoint = None
    batch = _batch_size(checkpoint.path, checkpoint.state) if checkpoint is not None else problem.workers
    proposed = {policy_key(r.quant_policy()) for r in store.records}
    stack = AgentEnv.build(problem, config.agent, batch, log, proposed)
    env, baseline, agent_env = stack.env, stack.baseline, stack.agent_env
    if stack.sensitivity is not None:
        write_sensitivity(store.path, stack.sensitivity)
        if log and problem.sensitivity is None:
            log(f"sensitivity: {stack.sensitivity.estimator} estimate of {len(stack.sensitivity.layers)} layers")
    episode_len = stack.episode_len
    replay(problem, store.records)
    done = len(store.records)
    remaining = config.episodes - done
    resume: _Resume | None = None
    if checkpoint is not None:
        model, training = store.load_agent(agent_env, replay_capacity(config.episodes, episode_len, batch))
        average, pending = _checkpoint_state(checkpoint.path, checkpoint.state)
        if baseline is not None:
            baseline.average = average
        resume = _Resume(training, pending, episode_len)
        if log:
            log(f"resuming {store.path} after {done} of {config.episodes} episodes")
    else:
        seed = config.seed + done
        if fresh is None:
            model = make_agent(config.agent, agent_env, episode_len, config.episodes, seed)
        else:
            model = fresh(agent_env, episode_len)
            model.set_random_seed(seed)
        if remaining > 0 and log and phase == 0 and any(RUNG not in r.extra for r in store.records):
            log(f"no checkpoint in {store.path}: the {done} logged episodes stand; a fresh agent learns the other {remaining}")
    redraws = stack.redraws
    if redraws is not None:
        redraws.draw = _draw(model)
    if remaining > 0:
        # stable-baselines3's own logger, writing the agent's losses as TensorBoard scalars into the run directory.
        model.set_logger(agent_logger(store.path))
        imitation = _imitation(config.agent, checkpoint.state if checkpoint is not None else {}, store.path)
        callback = _EpisodeLogger(store, config, agent_env, baseline, progress, resume, proposed, imitation, phase, total)
        rounds = math.ceil(remaining / batch)  # a batch never splits: the last one's extra episodes are not logged
        deferred = _deferred(model, config.agent, batch, problem)
        if deferred is not None:
            deferred.install()
            env.while_scoring = deferred.pay
        try:
            model.learn(total_timesteps=rounds * batch * episode_len, callback=callback, reset_num_timesteps=checkpoint is None)
        finally:
            env.while_scoring = None
            if deferred is not None:
                deferred.uninstall()
            if imitation is not None:
                imitation.uninstall()
        model.logger.close()
        if redraws is not None and log:
            how = "drawn again" if redraws.source == "agent" else "replaced by its objective's next-best allocation"
            log(f"objective agent: {redraws.redrawn} of its {remaining} episodes {how} (a policy of the run repeated)")


def _imitation(agent: AgentConfig, state: Mapping[str, Any], path: Path) -> SelfImitation | None:
    """The self-imitation of a resolved ``agent`` (None when off), with the elite a checkpoint's
    ``state`` recorded."""
    if not agent.imitation:
        return None
    return SelfImitation(EliteEpisodes.from_state(agent.imitation_episodes, state.get(ELITE), str(path)), agent.imitation)


def _deferred(model: BaseAlgorithm, agent: AgentConfig, batch: int, problem: SearchProblem) -> DeferredUpdates | None:
    """The agent's updates made while the next batch is scored, where ``agent`` asks for that."""
    if isinstance(model, OffPolicyAlgorithm) and agent.overlaps(batch, problem.config.evaluation.hardware_feedback):
        return DeferredUpdates(model)
    return None


@dataclass(frozen=True)
class AgentEnv:
    """The environments an agent learns through: ``batch`` episodes at a time, then (as ``agent``
    asks) the reward baseline, the cost credit and the whole policy as one step; ``agent_env`` is
    the outermost."""

    env: MixedPrecisionVecEnv
    baseline: VecRewardBaseline | None
    agent_env: VecEnv

    @property
    def episode_len(self) -> int:
        """The agent's steps per episode: one per layer, or one (:mod:`haq.search.whole_policy`)."""
        return 1 if isinstance(self.agent_env, VecWholePolicy) else self.env.num_layers

    @property
    def sensitivity(self) -> Sensitivity | None:
        """The per-layer sensitivity the agent allocates by: its objective decoder's, else the
        problem's (an action prior's or the observation's), else none."""
        decoder = self.agent_env.decoder if isinstance(self.agent_env, VecWholePolicy) else None
        if isinstance(decoder, ObjectiveDecoder):
            return decoder.sensitivity
        return self.env.problem.sensitivity

    @property
    def redraws(self) -> Redraws | None:
        """What draws an objective agent's repeating proposals again, if it does."""
        return self.agent_env.redraws if isinstance(self.agent_env, VecWholePolicy) else None

    @classmethod
    def build(
        cls,
        problem: SearchProblem,
        agent: AgentConfig,
        batch: int,
        log: Log | None = None,
        proposed: set[PolicyKey] | None = None,
    ) -> AgentEnv:
        """The stack for a resolved ``agent`` (:meth:`AgentConfig.for_problem`); ``log`` hears an
        objective agent's sensitivity being measured; ``proposed`` holds the run's policies so far,
        which an objective agent with ``redraws`` does not propose again (the search adds to it);
        without it nothing is drawn again (a transfer's zero-shot episode acts deterministically)."""
        env = MixedPrecisionVecEnv(problem, batch)
        baseline = VecRewardBaseline(env, agent.baseline_momentum) if agent.uses_baseline else None
        paid: VecEnv = baseline if baseline is not None else env
        credited: VecEnv = VecCostCredit(paid, problem.config.reward.cost_weight) if agent.cost_credit else paid
        agent_env: VecEnv = credited
        if agent.decision == "policy":
            agent_env = VecWholePolicy(credited, env.num_layers)
        elif agent.decision == "objective":
            decoder = ObjectiveDecoder.build(problem, agent.objective_span, agent.prior_floor, log)
            redraws = None
            if agent.replaces_repeats and proposed is not None:
                redraws = Redraws(proposed, tuple(problem.layer_names), agent.redraws, agent.redraw_from)
            agent_env = VecWholePolicy(credited, env.num_layers, decoder, redraws)
        return cls(env, baseline, agent_env)


@dataclass(frozen=True)
class _Resume:
    """What :func:`train` restores once ``learn`` has started (its start advances the noise and
    resets nothing else we keep): the saved RNG and noise states, then the owed update."""

    training: TrainingState
    update_pending: bool
    episode_len: int

    def apply(self, model: BaseAlgorithm) -> None:
        self.training.apply(model)
        if not self.update_pending:
            return
        # The update stable-baselines3's learn() makes right after the rollout the checkpoint ended.
        if isinstance(model, OffPolicyAlgorithm):
            if model.num_timesteps > 0 and model.num_timesteps > model.learning_starts:
                steps = model.gradient_steps if model.gradient_steps >= 0 else self.episode_len
                if steps > 0:
                    model.train(batch_size=model.batch_size, gradient_steps=steps)
        elif isinstance(model, OnPolicyAlgorithm):
            model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)  # noqa: SLF001 - as learn() does
            model.train()


def _batch_size(path: Path, state: Mapping[str, Any]) -> int:
    """Episodes the checkpointed agent collects at once (its number of environments): a resumed
    run keeps it whatever the number of workers, so it proposes what it would have proposed."""
    batch = state.get(BATCH, 1)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise RunDirError(f"{path}: '{BATCH}' must be a positive integer, got {batch!r}")
    return batch


def _checkpoint_state(path: Path, state: Mapping[str, Any]) -> tuple[float | None, bool]:
    """The reward baseline's average and whether an update is owed, from a checkpoint's state."""
    average, pending = state.get("baseline"), state.get(UPDATE_PENDING, False)
    if average is not None and (isinstance(average, bool) or not isinstance(average, (int, float)) or not math.isfinite(average)):
        raise RunDirError(f"{path}: 'baseline' must be a finite number or null, got {average!r}")
    if not isinstance(pending, bool):
        raise RunDirError(f"{path}: '{UPDATE_PENDING}' must be true or false, got {pending!r}")
    return (None if average is None else float(average)), pending


def _draw(model: BaseAlgorithm) -> Draw:
    """One action drawn as the agent's own proposals are (stable-baselines3's ``_sample_action``):
    uniformly while it warms up, else from its policy; a whole-policy agent's observation is constant."""
    obs = np.ones((1, 1), dtype=np.float32)

    def draw() -> np.ndarray:
        if isinstance(model, OffPolicyAlgorithm) and model.num_timesteps < model.learning_starts:
            return np.asarray(model.action_space.sample(), dtype=np.float32)
        action, _ = model.predict(obs, deterministic=False)
        return np.asarray(action[0], dtype=np.float32)

    return draw


def _mark_repeat(noise: object, index: int) -> None:
    """Tell the exploration noise (read when stable-baselines3 resets it, right after this
    callback) that environment ``index``'s episode proposed a policy the run had proposed before."""
    if isinstance(noise, BatchNoise):
        noise.mark_repeat(index)
    elif isinstance(noise, DecayingTruncatedNormalNoise):
        noise.mark_repeat()


class _EpisodeLogger(BaseCallback):
    """Collects each finished episode and, at the end of its rollout, commits it to the store."""

    def __init__(
        self,
        store: AgentStore,
        config: SearchConfig,
        agent_env: VecEnv,
        baseline: VecRewardBaseline | None,
        progress: OnProgress | None,
        resume: _Resume | None,
        proposed: set[PolicyKey],
        imitation: SelfImitation | None = None,
        phase: int = 0,
        total: int | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.episodes = config.episodes
        self.total = config.episodes if total is None else total
        self.phase = phase
        self.actor_delay = config.agent.actor_delay or 0
        self.actor_every = config.agent.actor_every
        self.agent_env = agent_env
        self.baseline = baseline
        self.progress = progress
        self.resume = resume
        self.imitation = imitation
        self._traces = EpisodeTraces()
        self._pending: list[tuple[EpisodeRecord, bool, EliteEpisode | None]] = []
        # what the run itself has proposed, rungs and resumed episodes included: an evaluator's cache
        # may hold other runs' policies too, and neither the noise nor the redraws may depend on them
        self._proposed = proposed

    def _on_training_start(self) -> None:
        set_actor_every(self.model, self.actor_every)
        if self.imitation is not None:
            self.imitation.install(self.model)
        self._hold()
        if self.resume is not None:
            self.resume.apply(self.model)

    def _hold(self) -> None:
        """Hold the actor while fewer than ``actor_delay`` agent episodes (rungs aside) are logged."""
        agent_episodes = sum(RUNG not in r.extra for r in self.store.records)
        hold_actor(self.model, agent_episodes < self.actor_delay)

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        if self.imitation is not None:
            acted_on = self.model._last_obs  # noqa: SLF001 - the observation this step acted on; learn() replaces it after the callback
            for i, info in enumerate(infos):
                self._traces.add(i, acted_on[i], info.get("applied_action", self.locals["buffer_actions"][i]))
        for i in np.flatnonzero(self.locals["dones"]):
            info = infos[i]
            policy = {n: (int(w), int(a)) for n, (w, a) in info["policy"].items()}
            extra = {k: info[k] for k in ANNOTATIONS if k in info}
            episode = len(self.store.records) + len(self._pending)
            record = EpisodeRecord(episode, policy, PolicyMetrics.from_dict(info["metrics"]), float(info["reward"]), extra)
            trace = self._traces.finish(i, episode, record.reward) if self.imitation is not None else None
            self._pending.append((record, bool(info["cached"]), trace))
            key = policy_key(record.quant_policy())
            if key in self._proposed:
                _mark_repeat(self.model.action_noise, int(i))
            self._proposed.add(key)
        return True

    def _on_rollout_end(self) -> None:
        """Commit the batch (past the run's episodes: dropped), checkpoint covering all of it."""
        batch = self._pending[: self.episodes - len(self.store.records)]
        self._pending = []
        if not batch:
            return
        self.store.agent = self.model
        average = self.baseline.average if self.baseline is not None else None
        state: dict[str, Any] = {"baseline": average, UPDATE_PENDING: True, BATCH: self.agent_env.num_envs}
        if self.phase:
            state[PHASE] = self.phase
        if self.imitation is not None:
            for _, _, trace in batch:
                if trace is not None:
                    self.imitation.elite.offer(trace)
            state[ELITE] = self.imitation.elite.to_state()
        self.store.commit_batch([r for r, _, _ in batch], state)
        self._hold()
        for record, cached, _ in batch:
            if self.progress is not None and self.store.best is not None:
                self.progress(Progress.after(record, self.store.best, self.total, cached))
