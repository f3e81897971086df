"""The agent's update: milliseconds per gradient step of each off-policy agent, as haq builds it.

On a small machine the agent's updates are a large share of a search whose evaluations are fast
(the digits CNN with the full evaluator: about 30 % of a 1-worker run on 2 cores), and they are the
part that does not spread over workers (``bench/parallel.py``). haq's agents step Adam fused into one
kernel per optimizer (:func:`haq.search.snapshot.policy_kwargs`); this benchmark times a gradient
step of each agent with that and with the per-tensor loop Adam uses on CPU by default (the same
agent, the optimizers' ``fused`` flag switched), in interleaved repeats on the same replay buffer,
and prints the medians and the median of the paired ratios, so a regression in either shows.

The agents are made by :func:`haq.search.agents.make_agent` for the digits CNN's environment (its
observation and action sizes, the default hidden layers and batch size), with a replay buffer of
random transitions: a gradient step's cost does not depend on what the transitions hold.

    python bench/agent_update.py                  # sac, td3, ddpg; 8 repeats of 128 steps
    python bench/agent_update.py --agents sac --repeats 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from envs.mixed_precision import MixedPrecisionEnv
from haq.evaluation.config import EvalConfig
from haq.jobs.problems import make_problem
from haq.problem.config import EnvConfig
from haq.search.agents import make_agent
from haq.search.config import AgentConfig

OFF_POLICY = ("sac", "td3", "ddpg")


def optimizers(model: OffPolicyAlgorithm) -> list[torch.optim.Optimizer]:
    """The agent's network optimizers (SAC's one-number entropy optimizer is left as it is)."""
    return [model.actor.optimizer, model.critic.optimizer]


def set_fused(model: OffPolicyAlgorithm, fused: bool) -> None:
    """Switch the agent's Adam between its fused kernel and the per-tensor loop (the state is the same)."""
    for opt in optimizers(model):
        for group in opt.param_groups:
            group["fused"] = fused


def filled_agent(algo: str, env: MixedPrecisionEnv, transitions: int, seed: int) -> OffPolicyAlgorithm:
    """``make_agent``'s agent for ``env`` with ``transitions`` random transitions in its replay buffer."""
    model = make_agent(AgentConfig(algo=algo), env, env.num_layers, max(transitions // env.num_layers, 1), seed)
    if not isinstance(model, OffPolicyAlgorithm) or model.replay_buffer is None:
        raise SystemExit(f"{algo} is not an off-policy agent")
    rng = np.random.default_rng(seed)
    obs_dim = env.observation_space.shape[0]  # type: ignore[index]
    act_dim = env.action_space.shape[0]  # type: ignore[index]
    for i in range(transitions):
        obs = rng.random((1, obs_dim), dtype=np.float32)
        nxt = rng.random((1, obs_dim), dtype=np.float32)
        action = rng.uniform(-1.0, 1.0, (1, act_dim)).astype(np.float32)
        done = np.array([i % env.num_layers == env.num_layers - 1])
        model.replay_buffer.add(obs, nxt, action, np.array([rng.random()], dtype=np.float32), done, [{}])
    return model


def step_ms(model: OffPolicyAlgorithm, steps: int) -> float:
    """Milliseconds of this thread's CPU per gradient step over ``steps`` steps (CPU time, so other
    processes on a shared machine slow it less than they would a wall clock)."""
    start = time.thread_time()
    model.train(gradient_steps=steps, batch_size=model.batch_size)
    return (time.thread_time() - start) / steps * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", nargs="+", default=list(OFF_POLICY), choices=OFF_POLICY)
    p.add_argument("--steps", type=int, default=128, help="gradient steps per timing")
    p.add_argument("--repeats", type=int, default=8, help="interleaved timings of each variant")
    p.add_argument("--transitions", type=int, default=400, help="random transitions in the replay buffer")
    ns = p.parse_args(argv)
    if ns.steps < 1 or ns.repeats < 1 or ns.transitions < 1:
        p.error("--steps, --repeats and --transitions must be >= 1")
    torch.set_num_threads(1)
    env = MixedPrecisionEnv(problem=make_problem(EnvConfig(evaluation=EvalConfig(kind="cheap")), log=lambda m: None))
    print(f"digits CNN environment ({env.num_layers} layers), {ns.repeats} interleaved repeats of {ns.steps} gradient steps\n")
    print("| agent | fused Adam (ms / step) | per-tensor Adam (ms / step) | fused / per-tensor: median paired ratio [range] |")
    print("|---|---|---|---|")
    for algo in ns.agents:
        model = filled_agent(algo, env, ns.transitions, seed=0)
        model.train(gradient_steps=8, batch_size=model.batch_size)  # first-step allocations, not timed
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(ns.repeats):
            for fused in (False, True):
                set_fused(model, fused)
                times[fused].append(step_ms(model, ns.steps))
        ratios = [f / u for f, u in zip(times[True], times[False])]
        print(
            f"| {algo} | {statistics.median(times[True]):.2f} | {statistics.median(times[False]):.2f} "
            f"| {statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}] |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
