"""An objective agent's proposal replaced while it repeats a policy of its run: drawn again from
the agent's own policy, or the next-best allocation under the objective it asked for.

Many objectives give the ILP the same allocation, and once the agent's policy has narrowed it
proposes its favourite again and again: on the digits CNN, 169 distinct policies in 300 episodes,
most of the repeats in the objective agent's share. A repeat is a cached lookup that counts as an
episode: it spends the run's evaluation budget on nothing new, gives the critic a copy of a
transition it holds, and with workers leaves one idle while the rest of its batch is scored.

So before an episode is stepped, the policy its action decodes to is checked against every policy
the run has proposed (its log, rungs and resumed episodes included, never an evaluator's cache,
which may hold other runs') and against the batch's earlier episodes, and a repeat is replaced up
to ``tries`` times, the last replacement kept whatever it is. Where the replacement comes from
(``AgentConfig.redraw_from``):

- ``agent``: another draw from the agent's own policy (its uniform warm-up draws while it warms
  up); the replay buffer stores the action that was stepped (``applied_action``), so the critic
  learns what was evaluated.
- ``objective``: the same action, solved again with every proposed policy cut off: the best
  allocation not yet proposed under the weights and budget the agent asked for. Why: on the
  digits MLP the agent settled on a neighbour of the ILP's best answer, which the ILP found as
  its 17th next-best solution, and never proposed the ILP's top ten (stop 62); a narrowed agent
  repeating its favourite then walks that objective's next-best solutions, as the ILP's ladder
  does. The critic learns the action's reward as that of what it was stepped to: the reward of
  its objective's best answer not yet tried, a function of the run's history as well as of the
  action.

Off-policy agents only: PPO's update needs the log-probability of the action its rollout holds.
Off by default (``AgentConfig.redraws``): drawing again from the agent, measured as the default on
the digits CNN, the portfolio's final test reward fell from +1.169 to +1.069 (median of seeds
10-19), its pick landing more often on the ILP's own allocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from haq.core.errors import InternalError
from haq.core.types import BitPair
from haq.evaluation.evaluators import PolicyKey, pairs_key

Draw = Callable[[], np.ndarray]
"""Draws one action from the agent's current policy (its warm-up distribution while it warms up)."""


class Allocator(Protocol):
    """A decoder whose policy is known before the episode is stepped (it already fits the budget)."""

    def policy(self, action: np.ndarray) -> tuple[BitPair, ...]: ...


@runtime_checkable
class Alternatives(Allocator, Protocol):
    """An allocator that also gives an action's best allocation other than some taken ones."""

    def alternative(
        self, action: np.ndarray, taken: Sequence[tuple[BitPair, ...]]
    ) -> tuple[tuple[BitPair, ...], tuple[BitPair, ...]] | None:
        """(the solver's answer, fitted to the budget) not among ``taken``; ``None`` if none is left."""
        ...


class Fresh(NamedTuple):
    """A batch after :meth:`Redraws.fresh`: the actions to step, each one's policy, how many
    times each was replaced, and the policy each action first asked for (a repeat where replaced)."""

    actions: np.ndarray
    policies: list[tuple[BitPair, ...]]
    counts: list[int]
    asked: list[tuple[BitPair, ...]]


@dataclass
class Redraws:
    """The run's proposed policies and how a repeating proposal is replaced.

    proposed: every policy the run has proposed, by key; the search adds each finished episode's.
    names: the layer names, in the decoder's order (the key names them as the log does).
    tries: replacements after the first proposal, at most, per episode.
    source: ``agent`` (a new draw, :attr:`draw`) or ``objective`` (the decoder's next-best
        allocation for the same action, :class:`Alternatives`).
    draw: the agent's draw, set once the agent exists (``agent`` only).
    redrawn: episodes whose first proposal was replaced, over the run so far (this process).
    """

    proposed: set[PolicyKey]
    names: tuple[str, ...]
    tries: int
    source: str = "agent"
    draw: Draw | None = None
    redrawn: int = 0

    def key(self, pairs: tuple[BitPair, ...]) -> PolicyKey:
        """The key the run's log gives this policy (``haq.evaluation.evaluators.policy_key``)."""
        return pairs_key(zip(self.names, pairs))

    def pairs(self, key: PolicyKey) -> tuple[BitPair, ...]:
        """The policy a key stands for, in the decoder's layer order."""
        named = {n: (w, a) for n, w, a in key}
        return tuple(named[n] for n in self.names)

    def fresh(self, actions: np.ndarray, decoder: Allocator) -> Fresh:
        """The batch's actions with repeats replaced, each one's policy, how many times each was
        replaced, and the policy each first asked for."""
        alternatives: Alternatives | None = None
        if self.source == "objective":
            if not isinstance(decoder, Alternatives):
                raise InternalError("replacing a repeat by the objective's next-best needs a decoder with alternative()")
            alternatives = decoder
        else:
            self._draw()
        out = np.array(actions, dtype=np.float32, copy=True)
        policies: list[tuple[BitPair, ...]] = []
        counts: list[int] = []
        asked: list[tuple[BitPair, ...]] = []
        batch: set[PolicyKey] = set()
        for i in range(len(out)):
            pairs = decoder.policy(out[i])
            asked.append(pairs)
            key, n = self.key(pairs), 0
            taken: list[tuple[BitPair, ...]] | None = None
            while n < self.tries and (key in self.proposed or key in batch):
                if alternatives is not None:
                    if taken is None:  # sorted: the solver's pick among tied answers may follow the cuts' order
                        taken = [self.pairs(k) for k in sorted(self.proposed | batch)]
                    found = alternatives.alternative(out[i], taken)
                    if found is None:
                        break
                    taken.append(found[0])
                    pairs = found[1]
                else:
                    out[i] = np.clip(self._draw()(), -1.0, 1.0)
                    pairs = decoder.policy(out[i])
                key, n = self.key(pairs), n + 1
            batch.add(key)
            policies.append(pairs)
            counts.append(n)
            self.redrawn += n > 0
        return Fresh(out, policies, counts, asked)

    def _draw(self) -> Draw:
        """The agent's draw (set once the agent exists)."""
        if self.draw is None:
            raise InternalError("Redraws.draw must be set before the agent steps")
        return self.draw


__all__ = ["Allocator", "Alternatives", "Draw", "Fresh", "Redraws"]
