"""An off-policy agent's gradient updates made while the next batch of policies is scored.

An agent that collects N episodes at a time waits while their policies are scored on the workers,
then learns from them; on a small machine its own updates are a large share of the run (the
digits CNN, full evaluator, 2 cores: 30 % of the wall time). :class:`DeferredUpdates` takes the
update stable-baselines3 asks for after a batch and makes it while the next batch's final
policies are scored (:attr:`envs.vector.MixedPrecisionVecEnv.while_scoring`), on the same
transitions: the replay buffer is read only up to the end of the batch the update belongs to,
never the unfinished episodes after it. The update is the same one; what changes is that each
batch is proposed by the agent as it was one batch earlier.

The order of everything that draws random numbers is fixed (proposals, then the owed update,
then the next proposals), so a run is as reproducible as without overlap, and a resumed run
owes the checkpointed batch's update exactly as the uninterrupted run did.
"""

from __future__ import annotations

from dataclasses import dataclass

from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from haq.core.errors import InternalError


@dataclass
class DeferredUpdates:
    """Holds the update an off-policy agent owes until :meth:`pay` makes it.

    :meth:`install` replaces the agent's ``train`` (which its ``learn`` loop calls after every
    batch) by :meth:`owe`; :meth:`uninstall` restores it.
    """

    model: OffPolicyAlgorithm
    steps: int = 0
    batch_size: int = 0
    upto: int = 0
    """Replay-buffer rows (time steps) the owed update may sample from: those before it was owed."""

    def install(self) -> None:
        """Shadow the agent's ``train`` with :meth:`owe` on this instance only: stable-baselines3's
        ``learn`` loop has no hook between a rollout and its update."""
        self.model.train = self.owe  # type: ignore[method-assign]

    def uninstall(self) -> None:
        """Give the agent its own ``train`` back (what is still owed stays owed, as a checkpoint records it)."""
        self.model.__dict__.pop("train", None)

    def owe(self, gradient_steps: int, batch_size: int) -> None:
        """Record an update of ``gradient_steps`` minibatches on the transitions stored so far."""
        if self.steps:
            self.pay()
        buffer = self._buffer()
        self.steps, self.batch_size, self.upto = gradient_steps, batch_size, buffer.pos

    def pay(self) -> None:
        """Make the owed update (if any), sampling only the rows stored when it was owed."""
        if not self.steps:
            return
        buffer = self._buffer()
        steps, self.steps = self.steps, 0
        pos, buffer.pos = buffer.pos, self.upto
        try:
            type(self.model).train(self.model, gradient_steps=steps, batch_size=self.batch_size)
        finally:
            buffer.pos = pos

    def _buffer(self) -> ReplayBuffer:
        buffer = self.model.replay_buffer
        if buffer is None or buffer.full:
            raise InternalError("a deferred update needs a replay buffer that has not wrapped around")
        return buffer
