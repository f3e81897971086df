"""The source run's evaluations, re-priced on the new device: what a transfer knows before it acts.

A policy's accuracy depends on the model, its data and the evaluator, not on the device; only its
cost does. So every policy the source search evaluated, on the same workload with the same
evaluator, has been evaluated for the new device too, once its cost is read from the new table
and its reward recomputed from the same accuracies. A transfer that reuses them replays each one
that the new environment can reach (its pairs supported by the new device, within the new
budget) through the environments the agent fine-tunes in, scored from those re-priced metrics,
never evaluated again; the transitions fill the fresh replay buffer and the critic makes the
updates it would have made after as many episodes. The actor is then fitted to the best of them
(:func:`clone_actor`), so the zero-shot episode is the best policy the transfer knows on the new
device, unless an allocation the source's accuracies predict better is fitted instead
(:mod:`haq.transfer.start`). The problem remembers every re-priced policy, so one the agent
proposes again is not evaluated again either.

Why: transferred alone, the agent improved no faster than a fresh search (``bench/transfer.py``:
77 of 162 comparisons within a quarter of scratch's episodes); its critic knew the old device's
costs. On the same scratch runs: reuse with the actor fitted to the best, 101 (seeds 3-5: 70
against the agent alone's 51); with the actor following the re-trained critic instead, 69 (its
zero-shot policies were worse than the replayed ones' best); critic only, actor held, 62.
Not reused: another model or evaluator (other accuracies), hardware feedback (the latency is
measured, not priced), multi-fidelity scoring (a screened reward belongs to its screen's
calibration), and a PPO agent (on-policy: it cannot learn from replayed episodes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.types import BitPair
from haq.evaluation.evaluators import PolicyCosts
from haq.problem.budget import encode_pair, map_action
from haq.problem.config import EnvConfig
from haq.problem.fidelity import Scored
from haq.problem.problem import MULTI, SearchProblem
from haq.runs.rundir import EpisodeRecord
from haq.runs.tracking import quiet_logger
from haq.search.agents import hold_actor


@dataclass(frozen=True)
class Repriced:
    """One source evaluation as the new device prices it: a policy in the problem's layer order."""

    pairs: tuple[BitPair, ...]
    scored: Scored
    source_episode: int


def why_not_reused(source: EnvConfig, target: EnvConfig) -> str | None:
    """Why the source's evaluations say nothing about the target's accuracies, or ``None`` when they do."""
    if source.workload != target.workload:
        return "another workload (model, data or input size)"
    if source.evaluation != target.evaluation:
        return "another evaluator"
    if target.evaluation.kind == MULTI:
        return "multi-fidelity scoring (a screened reward belongs to its run's calibration)"
    if target.evaluation.hardware_feedback:
        return "hardware feedback (latency is measured on the device, not priced)"
    return None


def reprice(records: Sequence[EpisodeRecord], problem: SearchProblem) -> list[Repriced]:
    """The distinct policies of ``records`` that ``problem``'s environment can produce, scored on
    its device: the source's accuracies, the new table's costs, the new budget's reward; in log order."""
    costs = PolicyCosts(problem.workload.layers, problem.table, problem.table)
    reference = problem.evaluator.reference
    seen: set[tuple[BitPair, ...]] = set()
    out: list[Repriced] = []
    for record in records:
        pairs = record.pairs(problem.layer_names)
        if pairs is None or pairs in seen or not reachable(problem, pairs):
            continue
        seen.add(pairs)
        latency, energy, size = costs.costs(problem.policy(pairs))
        metrics = dataclasses.replace(record.metrics, latency_ms=latency, energy_mj=energy, size_bits=size, eval_seconds=0.0)
        out.append(Repriced(pairs, Scored(metrics, problem.reward(metrics, reference), cached=True), record.episode))
    return out


def reachable(problem: SearchProblem, pairs: tuple[BitPair, ...]) -> bool:
    """Whether the environment, asked for ``pairs`` layer by layer, applies exactly them (every pair
    supported on the device and never lowered by the budget projection); nothing is evaluated."""
    if any(p not in c.pairs for p, c in zip(pairs, problem.budget_model.layers)):
        return False
    env = MixedPrecisionEnv(problem=problem)
    env.reset()
    for action in actions_for(problem, pairs):
        _, info, _ = env.decide(action)
        if info["projected"]:
            return False
    return True


def actions_for(problem: SearchProblem, pairs: Sequence[BitPair]) -> list[np.ndarray]:
    """The actions that ask the environment for ``pairs``, one per layer, in the problem's frame."""
    prior = problem.prior
    return [
        encode_pair(pair, choices.pairs, prior[i] if prior is not None else None)
        for i, (pair, choices) in enumerate(zip(pairs, problem.budget_model.layers))
    ]


def replay(model: BaseAlgorithm, venv: VecEnv, problem: SearchProblem, repriced: Sequence[Repriced]) -> int:
    """Step ``venv`` (the agent's environments over ``problem``) through the repriced policies
    (``num_envs`` at a time; a last, incomplete batch is left out) and add every transition to
    ``model``'s replay buffer; returns the episodes replayed. The problem remembers every repriced
    policy first, so no episode is evaluated."""
    if not isinstance(model, OffPolicyAlgorithm):
        return 0
    for r in repriced:
        problem.remember(problem.policy(r.pairs), r.scored)
    n = venv.num_envs
    batches = [repriced[i : i + n] for i in range(0, len(repriced) - n + 1, n)]
    for batch in batches:
        obs = venv.reset()
        steps = [actions_for(problem, r.pairs) for r in batch]
        for t in range(len(problem.layer_names)):
            actions = np.stack([s[t] for s in steps]).astype(np.float32)
            new_obs, rewards, dones, infos = venv.step(actions)
            next_obs = np.array(new_obs, copy=True)
            for i in np.flatnonzero(dones):
                next_obs[i] = infos[i]["terminal_observation"]
            model.replay_buffer.add(obs, next_obs, actions, rewards, dones, infos)  # type: ignore[union-attr]
            obs = new_obs
    return len(batches) * n


def learn_from_replay(model: BaseAlgorithm, episodes: int, per_episode: int, hold: bool) -> int:
    """The updates the agent would have made after ``episodes`` episodes, ``per_episode`` each, its
    actor held (critic only) when ``hold``; returns how many it made."""
    if not isinstance(model, OffPolicyAlgorithm) or episodes == 0:
        return 0
    steps = episodes * per_episode
    model.set_logger(quiet_logger())
    hold_actor(model, hold)
    model.train(gradient_steps=steps, batch_size=model.batch_size)
    hold_actor(model, False)
    return steps


def clone_actor(model: BaseAlgorithm, problem: SearchProblem, pairs: Sequence[BitPair], steps: int) -> bool:
    """Fit the deterministic actor (Adam on the squared error, at most ``steps`` steps, checked every
    :data:`CHECK_EVERY`) to the actions that ask for ``pairs`` along their own episode, until it
    asks for exactly them; returns whether it does.

    Why: the critic learned from a few dozen replayed episodes, and an actor moved along its
    slope acted worse than the replayed episodes' best (``bench/transfer.py``); started at that
    best, its first episode is the best policy the transfer knows on the new device, and the
    fine-tuning explores around it with the critic's knowledge.
    """
    actor = getattr(model, "actor", None)
    if not isinstance(model, OffPolicyAlgorithm) or not isinstance(actor, nn.Module) or steps == 0:
        return False
    obs, actions = trajectory(problem, pairs)
    x, y = torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(actions, dtype=torch.float32)
    done, exact = 0, asks_for(model, problem, x, pairs)
    while not exact and done < steps:
        for _ in range(min(CHECK_EVERY, steps - done)):
            loss = ((model.policy._predict(x, deterministic=True) - y) ** 2).mean()  # noqa: SLF001 - SB3's differentiable actor output
            actor.optimizer.zero_grad()
            loss.backward()
            actor.optimizer.step()
            done += 1
        exact = asks_for(model, problem, x, pairs)
    target = getattr(model, "actor_target", None)
    if isinstance(target, nn.Module):
        target.load_state_dict(actor.state_dict())
    return exact


CHECK_EVERY = 25
"""Clone steps between checks of whether the actor asks for the cloned policy."""


@torch.no_grad()
def asks_for(model: BaseAlgorithm, problem: SearchProblem, observations: torch.Tensor, pairs: Sequence[BitPair]) -> bool:
    """Whether the deterministic actor's actions on ``observations`` (one per layer) map to ``pairs``."""
    asked = model.policy._predict(observations, deterministic=True).numpy()  # noqa: SLF001
    frame = problem.prior
    got = [
        map_action(a, c.pairs, frame[i] if frame is not None else None)
        for i, (a, c) in enumerate(zip(asked, problem.budget_model.layers))
    ]
    return tuple(got) == tuple(pairs)


def trajectory(problem: SearchProblem, pairs: Sequence[BitPair]) -> tuple[np.ndarray, np.ndarray]:
    """The observations and actions of the episode that asks for ``pairs`` (unevaluated)."""
    env = MixedPrecisionEnv(problem=problem)
    obs, _ = env.reset()
    observations, actions = [], []
    for action in actions_for(problem, pairs):
        observations.append(obs)
        actions.append(action)
        obs, _, _ = env.decide(action)
    return np.asarray(observations), np.asarray(actions)
