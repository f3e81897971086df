"""An objective agent's proposal drawn again from its own policy while it repeats a policy of its run.

Many objectives give the ILP the same allocation, and once the agent's policy has narrowed it
proposes its favourite again and again: on the digits CNN, 169 distinct policies in 300 episodes,
most of the repeats in the objective agent's share. A repeat is a cached lookup that counts as an
episode: it spends the run's evaluation budget on nothing new, gives the critic a copy of a
transition it holds, and with workers leaves one idle while the rest of its batch is scored.

So before an episode is stepped, the policy its action decodes to is checked against every policy
the run has proposed (its log, rungs and resumed episodes included, never an evaluator's cache,
which may hold other runs') and against the batch's earlier episodes; a repeat is replaced by
another draw from the agent's own policy (its uniform warm-up draws while it warms up), up to
``tries`` times, the last draw kept whatever it decodes to. The replay buffer stores the action
that was stepped (``applied_action``), so the critic learns what was evaluated.

Off-policy agents only: PPO's update needs the log-probability of the action its rollout holds.
Off by default (``AgentConfig.redraws``): measured as the default on the digits CNN, the portfolio's
final test reward fell from +1.169 to +1.069 (median of seeds 10-19), its pick landing more often
on the ILP's own allocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from haq.core.errors import InternalError
from haq.core.types import BitPair
from haq.evaluation.evaluators import PolicyKey, pairs_key

Draw = Callable[[], np.ndarray]
"""Draws one action from the agent's current policy (its warm-up distribution while it warms up)."""


class Allocator(Protocol):
    """A decoder whose policy is known before the episode is stepped (it already fits the budget)."""

    def policy(self, action: np.ndarray) -> tuple[BitPair, ...]: ...


@dataclass
class Redraws:
    """The run's proposed policies and how often a repeating proposal is drawn again.

    proposed: every policy the run has proposed, by key; the search adds each finished episode's.
    names: the layer names, in the decoder's order (the key names them as the log does).
    tries: draws after the first, at most, per episode.
    draw: the agent's draw, set once the agent exists.
    redrawn: episodes whose first draw was replaced, over the run so far (this process).
    """

    proposed: set[PolicyKey]
    names: tuple[str, ...]
    tries: int
    draw: Draw | None = None
    redrawn: int = 0

    def key(self, pairs: tuple[BitPair, ...]) -> PolicyKey:
        """The key the run's log gives this policy (``haq.evaluation.evaluators.policy_key``)."""
        return pairs_key(zip(self.names, pairs))

    def fresh(self, actions: np.ndarray, decoder: Allocator) -> tuple[np.ndarray, list[tuple[BitPair, ...]], list[int]]:
        """The batch's actions with repeats drawn again, each one's policy, and how many times each was redrawn."""
        if self.draw is None:
            raise InternalError("Redraws.draw must be set before the agent steps")
        out = np.array(actions, dtype=np.float32, copy=True)
        policies: list[tuple[BitPair, ...]] = []
        counts: list[int] = []
        batch: set[PolicyKey] = set()
        for i in range(len(out)):
            pairs = decoder.policy(out[i])
            key, n = self.key(pairs), 0
            while n < self.tries and (key in self.proposed or key in batch):
                out[i] = np.clip(self.draw(), -1.0, 1.0)
                pairs = decoder.policy(out[i])
                key, n = self.key(pairs), n + 1
            batch.add(key)
            policies.append(pairs)
            counts.append(n)
            self.redrawn += n > 0
        return out, policies, counts


__all__ = ["Allocator", "Draw", "Redraws"]
