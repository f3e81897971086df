"""Several mixed-precision episodes at once, whose final policies are scored as one batch.

:class:`MixedPrecisionVecEnv` is a stable-baselines3 ``VecEnv`` of N copies of
:class:`~envs.mixed_precision.MixedPrecisionEnv` over one search problem. All copies step
together and every episode has the same length, so they finish on the same step; their N
policies are then scored by one :meth:`~haq.problem.problem.SearchProblem.score_many` call,
which a worker pool evaluates concurrently. With one copy it is exactly stable-baselines3's
``DummyVecEnv`` around the environment.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from envs.mixed_precision import MixedPrecisionEnv
from haq.core.validate import count
from haq.problem.problem import SearchProblem
from haq.quant import QuantPolicy


class MixedPrecisionVecEnv(DummyVecEnv):
    """``n`` environments over ``problem``; the episodes that end on a step are scored together, in env order."""

    def __init__(self, problem: SearchProblem, n: int) -> None:
        count("environments", n)
        envs = [MixedPrecisionEnv(problem=problem) for _ in range(n)]
        super().__init__([lambda env=env: env for env in envs])  # type: ignore[misc]
        self.problem = problem

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
        scored = self.problem.score_many([policy for _, _, policy in finished])
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
