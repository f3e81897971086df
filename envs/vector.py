"""Several mixed-precision episodes at once, whose final policies are scored as one batch.

:class:`MixedPrecisionVecEnv` is a stable-baselines3 ``VecEnv`` of N copies of
:class:`~envs.mixed_precision.MixedPrecisionEnv` over one search problem. All copies step
together and every episode has the same length, so they finish on the same step; their N
policies are then scored by one :meth:`~haq.problem.problem.SearchProblem.score_many` call,
which a worker pool evaluates concurrently. With one copy it is exactly stable-baselines3's
``DummyVecEnv`` around the environment.

``while_scoring`` is work the driver does while a batch is scored: on a worker pool it runs on a
second thread while this one waits for the workers (it must not touch the environments); with
in-process evaluation it runs first, then the batch is scored. Either way it runs exactly once
per scored batch, before its results are used.
"""

from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any, Callable, Sequence

from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.validate import count
from haq.problem.fidelity import Scored
from haq.problem.problem import SearchProblem
from haq.quant import QuantPolicy


class MixedPrecisionVecEnv(DummyVecEnv):
    """``n`` environments over ``problem``; the episodes that end on a step are scored together, in env order."""

    def __init__(self, problem: SearchProblem, n: int) -> None:
        count("environments", n)
        envs = [MixedPrecisionEnv(problem=problem) for _ in range(n)]
        super().__init__([lambda env=env: env for env in envs])  # type: ignore[misc]
        self.problem = problem
        self.while_scoring: Callable[[], None] | None = None

    @property
    def num_layers(self) -> int:
        """Episode length (the same in every copy)."""
        return self.envs[0].unwrapped.num_layers  # type: ignore[attr-defined]

    def step_wait(self) -> VecEnvStepReturn:
        finished: list[tuple[int, dict[str, Any], QuantPolicy]] = []
        for i, env in enumerate(self.envs):
            obs, info, policy = env.unwrapped.decide(self.actions[i])  # type: ignore[attr-defined]
            self.buf_rews[i], self.buf_dones[i], self.buf_infos[i] = 0.0, False, info
            if policy is None:
                self._save_obs(i, obs)
            else:
                finished.append((i, info, policy))
        scored = self._score([policy for _, _, policy in finished]) if finished else []
        for (i, info, policy), s in zip(finished, scored):
            env = self.envs[i].unwrapped
            obs, reward, _, _, info = env.finish(info, policy, s)  # type: ignore[attr-defined]
            self.buf_rews[i], self.buf_dones[i] = reward, True
            info["TimeLimit.truncated"] = False
            info["terminal_observation"] = obs
            self.buf_infos[i] = info
            obs, self.reset_infos[i] = self.envs[i].reset()
            self._save_obs(i, obs)
        for i in range(self.num_envs):
            self.buf_infos[i].setdefault("TimeLimit.truncated", False)
        return self._obs_from_buf(), self.buf_rews.copy(), self.buf_dones.copy(), deepcopy(self.buf_infos)

    def _score(self, policies: Sequence[QuantPolicy]) -> list[Scored]:
        """The batch's scores, with ``while_scoring`` done alongside (pool) or first (in-process)."""
        work = self.while_scoring
        if work is None:
            return self.problem.score_many(policies)
        if self.problem.pool is None:
            work()
            return self.problem.score_many(policies)
        return _alongside(work, lambda: self.problem.score_many(policies))


def _alongside(background: Callable[[], None], foreground: Callable[[], list[Scored]]) -> list[Scored]:
    """``foreground()`` on this thread while ``background()`` runs on another; both finish (or
    fail) before this returns, the foreground's error first."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            background()
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="haq-while-scoring")
    thread.start()
    try:
        result = foreground()
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return result
