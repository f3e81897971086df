"""Cost credit: the agent is paid the cost part of the reward at the step that spends it.

The episode reward arrives at the last step (:mod:`haq.search.agents`), so the critic learns what
one layer's bits do to the cost only through the noise of the whole episode's accuracy: on
ResNet-20 (cheap evaluator, 300 images) one image is 0.033 reward and moving the whole policy
from 60 % to 90 % of the budget costs 0.06, and the centred agent drifted up the budget. The cost is
known exactly per layer, so this wrapper pays ``−cost_weight × (the layer's share of the
budget)`` at each step and adds back what it paid at the last step. Every episode's total is
unchanged, so are the optimal policies and the logged rewards; with γ = 1 and whole-episode
returns a transition's target becomes the reward to go (the accuracy terms minus the cost of
this and the later layers), whose dependence on its own action is exact.

Under a whole-episode repair (``EnvConfig.projection`` ``shift`` / ``ceiling``) a step is paid for
what it asked, since what the repair keeps is known only at the end; the last step still settles
the episode's true total, so the dependence is no longer exact there.
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn


class VecCostCredit(VecEnvWrapper):
    """Pay each step its layer's cost term; the last step gets back what the earlier ones were paid."""

    def __init__(self, venv: VecEnv, cost_weight: float) -> None:
        super().__init__(venv)
        self.cost_weight = cost_weight
        self._used = np.zeros(venv.num_envs, dtype=np.float64)

    def reset(self) -> VecEnvObs:
        self._used[:] = 0.0
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        rewards = np.asarray(rewards, dtype=np.float32).copy()
        for i, info in enumerate(infos):
            if dones[i]:
                rewards[i] += self.cost_weight * self._used[i]
                self._used[i] = 0.0
            else:
                used = float(info["budget_used"])
                rewards[i] -= self.cost_weight * (used - self._used[i])
                self._used[i] = used
        return obs, rewards, dones, infos
