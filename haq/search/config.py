"""Search configuration: the RL agent and the whole run, frozen and validated on construction.

Every field has a default, so ``SearchConfig()`` is the embedded default. Configs round-trip
through JSON with the generic serializer (:mod:`haq.core.config`), so a run directory records
exactly what produced it and a ``--resume`` can refuse a directory written by a different
configuration.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from haq.core.config import absent_means
from haq.core.errors import ConfigError, InternalError
from haq.core.validate import choice, count, finite, positive, unit_interval
from haq.problem.config import EnvConfig

AGENTS = ("auto", "ddpg", "td3", "sac", "ppo")
"""``auto`` resolves per problem (:meth:`AgentConfig.for_problem`): DDPG for a per-layer agent centred on an
action prior, else SAC (the default decision on every problem is an objective agent or a portfolio, both SAC)."""
CENTRED_ACTOR_DELAY = 10
"""``AgentConfig.actor_delay`` of a centred agent when not set."""
CENTRED_ACTOR_EVERY = 4
"""``AgentConfig.actor_every`` of a centred agent when not set."""
IMITATION = 10.0
"""``AgentConfig.imitation`` of a centred DDPG / TD3 agent when not set (TD3+BC's ``α`` = 0.1)."""
IMITATING = ("ddpg", "td3")
"""The algorithms whose actor :mod:`haq.search.imitation` can regularize."""
MAX_SQUASHED_ENTROPY = math.log(2.0)
"""The entropy of the uniform distribution on [-1, 1], the most a squashed action can have per
dimension: a higher SAC target would grow its entropy weight without bound."""
AGENT_DECISIONS = ("layer", "policy", "objective")
"""What one agent's step decides: one layer (HAQ's episode), the whole policy in one step, or the
objective the sensitivity ILP allocates the whole policy by, in one step."""
PORTFOLIO = "portfolio"
"""``AgentConfig.decision`` of a search that runs several agents one after the other
(``AgentConfig.portfolio``), each for an equal share of the episodes."""
DECISIONS = ("auto", *AGENT_DECISIONS, PORTFOLIO)
"""``AgentConfig.decision``: ``auto`` resolves per problem (:meth:`AgentConfig.resolved_decision`)."""
WHOLE_DECISIONS = ("policy", "objective")
"""The decisions that take one agent step per episode (:mod:`haq.search.whole_policy`)."""
PRIOR_DECISIONS = ("objective", "layer")
"""``AgentConfig.prior_decision``: what ``decision = "auto"`` resolves to on a problem with an action prior."""
REDRAW_SOURCES = ("agent", "objective")
"""``AgentConfig.redraw_from``: where a repeating proposal's replacement comes from (:mod:`haq.search.redraw`)."""
PRIOR_CENTRES = ("best", "cheapest_tied")
"""``AgentConfig.prior_centre``: the best-scoring rung, or the cheapest within the rewards' sampling noise of it."""


@dataclass(frozen=True)
class AgentConfig:
    """The reinforcement-learning agent (stable-baselines3) and HAQ's DDPG recipe.

    algo: ``auto`` | ``ddpg`` | ``td3`` | ``sac`` | ``ppo``. ``auto`` (default) is DDPG when the
        agent starts at an action prior and SAC otherwise: from an informed start a
        deterministic actor with decaying local noise is a local search around it (ResNet-20 /
        MobileNetV2, cheap evaluator: random search's best at once, where SAC from uniform bins
        needed 40 to over 150 evaluations), while with nothing known SAC's maximum-entropy
        exploration is what beat random search (digits, full evaluator; uncentred DDPG did
        not); measured with ``bench/search_quality.py``.
    hidden: hidden layer sizes of actor and critic (small: the state has ~20 features).
    learning_rate: Adam learning rate of actor and critic (stable-baselines3 uses one rate).
    batch_size: replay minibatch (off-policy) or PPO minibatch cap.
    tau: target-network soft-update rate.
    warmup_episodes: episodes of uniformly random actions before learning (off-policy).
    noise_sigma: initial std of the truncated-normal exploration noise (DDPG / TD3).
    noise_decay: per-episode decay factor of that std after warm-up.
    noise_shift: std of an extra exploration shift drawn once per episode and added at every
        layer (DDPG / TD3), decaying alike: it moves a whole policy along the cost curve.
    reward_baseline: subtract a moving average of past episode rewards (HAQ's variance trick);
        ``None`` turns it on for DDPG (HAQ's recipe) and off for the others (it made SAC worse).
    baseline_momentum: weight of the old average in that moving average.
    gradient_steps: gradient updates per finished episode (off-policy); ``-1`` = one per step.
    ppo_epochs: PPO optimization epochs per rollout (one rollout = one episode).
    start_at_centre: zero the actor's output layer, so the first policy is action 0 at every
        layer: the environment's centre, i.e. the action prior's allocation (residual learning
        from an informed start). ``None`` (default): on exactly when the environment has an
        action prior (``EnvConfig.prior == "sensitivity"``). A centred agent skips the random
        warm-up episodes, which would throw the prior away.
    initial_log_std: for a centred SAC / PPO agent, the log std of its first policy (before
        SAC's tanh), so exploration starts near the centre instead of across the whole range.
    ent_coef_init: SAC's entropy weight at the start (auto-tuned from there); ``None``: SB3's
        1.0, or 0.01 for a centred agent, whose start an entropy bonus that outweighs reward
        differences of ~0.1 would push away from the prior for most of a short run.
    target_entropy: SAC's target entropy per action dimension (its entropy weight is tuned
        toward it); ``None``: stable-baselines3's −1. Why: the actions are binned into bit
        widths (seven bins over [−1, 1] for 2-8 bits), and at −1 the squashed policy's spread
        is about a third of a bin, so once the weight has tuned down the agent proposes the same
        widths on most layers and repeats whole policies (cached lookups that still count as
        episodes). −0.5 (half a bin) was measured as a default and not adopted: over 20 seeds of
        the digits models (full evaluator, 300 evaluations) it raised the distinct policies per
        run (CNN 198 → 271, MLP 281 → 299) and the MLP's median final test reward (+1.196 →
        +1.322; its mean stayed level), lowered the CNN's (+1.078 → +1.059), and reached random
        search's best within 150 evaluations no more often (33 of 40).
        ``bench/search_quality.py --methods rl-wide``.
    noise_layers: how many layers per episode the DDPG / TD3 noise moves on average (each
        step's draw applies with probability ``noise_layers`` / layers); 0 = every layer.
    noise_reheat: after an episode that proposed a policy its run had proposed before, the
        DDPG / TD3 noise's σ is multiplied by this instead of ``noise_decay``, up to
        ``noise_sigma`` (:mod:`haq.search.noise`); ``None``: off (σ follows its schedule).
    centred_noise_sigma / centred_noise_decay / centred_noise_layers / centred_noise_reheat: the
        DDPG / TD3 noise of a centred agent, which replaces ``noise_sigma`` / ``noise_decay`` /
        ``noise_layers`` / ``noise_reheat``: a local search around the prior that changes a few
        layers at a time (noise on every layer of MobileNetV2 put some layer at a collapsing width
        in nearly every episode). Its reheat is off by default: once σ has decayed the centred
        agent proposes its own policy again and again, each time a cached lookup that still
        counts as an episode (48-65 distinct policies in ResNet-20's 300 episodes, Bit Fusion,
        budget 0.5, cheap evaluator, seeds 0-2; 81-169 in MobileNetV2's), and reheat 2 made them
        260 and 272 (mean) with better best search rewards on MobileNetV2 (median −0.900 against
        −1.033) but no better test-split reward (ResNet-20 −0.123 against −0.120, MobileNetV2
        −1.200 against −1.144; cross-fitted −0.123 against −0.148, −1.089 against −1.061), in 2.5
        to 5 times the wall time (every episode a real evaluation): more distinct candidates give
        the pick more lucky ones to choose among. ``bench/search_quality.py --methods rl-reheat``.
    actor_delay: agent episodes (after any prior rungs) during which the actor stays where it
        started while the critic learns from the exploration around it. ``None`` (default): 10
        for a centred agent, 0 otherwise. Why: after its first episode the critic has seen one
        reward, and the actor's first updates along that critic's arbitrary slope threw the
        centred ResNet-20 agent from 60 % of the budget with 98 % accuracy to 100 % with 38 %
        in its next episode, in both seeds measured.
    actor_every: a DDPG / TD3 actor update once per this many critic updates (TD3's policy
        delay). ``None`` (default): 4 for a centred agent, else the algorithm's own (DDPG 1,
        TD3 2). Why: Adam moves every weight by about the learning rate per step however flat
        the critic is, so 32 actor steps after a critic fitted to ten local episodes threw the
        centred ResNet-20 agent from 60 % of the budget to a collapsing 35 % at once.
    cost_credit: pay the cost part of the reward at the step that spends it and the rest at the
        end (:mod:`haq.search.credit`; episode totals unchanged). ``None`` (default): on for a
        centred agent, whose local search needs the cost slope the whole-episode reward hides
        in accuracy noise (alone it did not stop the ResNet-20 agent's drift up the budget; with
        ``actor_delay`` and ``actor_every`` the runs stayed near the centre); off otherwise (SAC
        from uniform bins was measured without it).
    prior_rungs / prior_floor: before a centred agent starts, the sensitivity allocation is
        evaluated at ``prior_rungs`` budgets (at most a tenth of the run's episodes) evenly
        spaced from the full budget down to ``prior_floor`` × budget (the ILP baseline's ladder
        floor), and actions are centred on the best-scoring one (:mod:`haq.search.rungs`); those
        evaluations count as episodes. Why: the reward pays for a lower cost, and on ResNet-20
        the full-budget allocation sat at 100 % of the budget with 98.3 % accuracy where the
        same accuracy costs 52 % of it; the agent's local noise never walked that far. More
        rungs measured no better: 30 in 300 episodes gave ResNet-20 −0.130 / −0.130 and
        MobileNetV2 −1.589 / −1.200 on the test split (seeds 0 / 1) against 6 rungs' −0.119 /
        −0.120 and −1.033 / −1.200; the rungs' rewards differ by single images, and most of
        MobileNetV2's collapse. Fewer than 2: centre on the full-budget allocation, unevaluated.
    prior_centre: which rung the agent is centred on: ``best`` (the best-scoring) or
        ``cheapest_tied`` (default): the cheapest rung whose reward is within one standard error
        of the best rung's (the binomial sampling error of its accuracies on the search's
        images, :func:`haq.problem.reward.sampling_std`; the one-standard-error rule of model
        selection). Why: the rungs' rewards differ by single images and the best-scoring one is
        the luckiest as often as the best; ResNet-20's rung at 0.6 of the budget (98.0 % on the
        300 search images) beat the one at 0.5 (97.67 %, one image fewer) by 0.013 with a
        standard error of 0.081, and the agent centred there ended at 60 % of the budget where
        the ILP's pick, at 52 %, lost no test image either (test-split reward −0.120 against
        −0.104). Centred on the cheapest tied rung (0.5), its median over seeds 0-5 was −0.100
        (``bench/search_quality.py --models resnet20 --methods rl rl-best-rung``); MobileNetV2's
        lower rungs collapse the network, so its centre is the same under both rules.
    imitation / imitation_episodes: a DDPG / TD3 actor's loss gains TD3+BC's behaviour-cloning
        term toward every step of the run's ``imitation_episodes`` best episodes, with weight
        ``imitation`` (1 / TD3+BC's ``α``; :mod:`haq.search.imitation`; 0: off). ``None``
        (default): 10 for a centred DDPG / TD3 agent, off otherwise. Why: released from
        ``actor_delay``, the centred MobileNetV2 agent (Bit Fusion, budget 0.5, cheap
        evaluator, 300 episodes, 2 workers) followed its young critic from rewards around −1.1
        to allocations that collapse the network (below −5; −9 is chance accuracy) in 96 / 58 /
        21 % of its episodes (seeds 0 / 1 / 2). With weight 0.4 (TD3+BC's own α = 2.5) seeds 0 / 1
        still collapsed in 96 %; with 4 in 28 / 12 / 11 %; with 10 in 12 / 8 % (seeds 0 / 1).
        On seeds 3 / 4 / 5, run after 10 was chosen: 10 / 17 / 33 % without, 6-7 % with, and
        test-split rewards −1.311 / −1.311 / −1.811 without, −1.144 / −1.144 / −1.089 with.
        ResNet-20's test-split reward was −0.120 on seeds 0-2 with and without it.
    overlap_updates: an off-policy agent that collects several episodes at a time makes each
        batch's gradient update while the next batch is scored on the workers
        (:mod:`haq.search.overlap`), so it proposes each batch one update behind. ``None``
        (default): on when it collects more than one episode at a time and latency is priced
        from a table (hardware feedback times policies on this machine, which the update would
        slow). Why: on 2 cores the agent's updates were 30 % of a digits CNN run with the full
        evaluator; 2 workers ran 1.22-1.60x as fast as one in lockstep and 1.41-1.83x
        overlapped (``bench/parallel.py --no-overlap``, 24-96 episodes).
    decision: what one step of the agent decides. ``auto`` (default): ``portfolio`` on a problem
        without an action prior, where the agents would otherwise search without the sensitivity
        (the robust-reward workloads), and ``objective`` on one with a prior (clean-accuracy
        rewards); ``layer`` where the settings rule out an objective agent (DDPG / TD3,
        ``start_at_centre``), whose centred per-layer agent starts from the sensitivity ILP's
        allocations. Each chosen by a rule written before its runs: the portfolio on fresh seeds
        (see ``portfolio``); the objective agent on 2026-12-07 over the centred per-layer agent,
        the default until then, on an AVX2 machine's models (seeds 0-2, Bit Fusion at half the
        uniform 8-bit latency, 300 evaluations): MobileNetV2 −0.921 against −1.311 and the ILP's
        −1.476 (cross-fitted −1.116 against −1.450 and −1.532), ResNet-20 −0.101 against −0.103
        and −0.108; on another machine's models (2026-12-05, 6 seeds) −1.532 and −0.080 against
        the ILP's −1.755 and −0.100 (``prior_decision``). ``layer``: one layer's pair per step,
        HAQ's episode. ``policy``: every layer's pair in one step (:mod:`haq.search.whole_policy`),
        so the critic learns the reward of a whole policy instead of what one layer's choice is
        worth averaged over the later layers' (with whole-episode returns, the target of every
        step). The agent's action space is then one model's layers, so it cannot be transferred;
        ``auto`` resolves to SAC, and DDPG / TD3 are refused: their local noise moves a few layers
        per episode one step at a time (``noise_layers``), which one step for all layers cannot do.
        Measured on the agent alone (cheap evaluator, 300 evaluations, seeds 0-5): MobileNetV2
        with the ceiling repair −2.061 against −2.311 per layer (better on 5 of 6 seeds; ILP
        −1.755); ResNet-20 with the stepwise projection −0.163 against −0.109 (0 of 6): it never
        learned to ask for less than the budget, which the per-layer state (the budget spent so
        far) shows and a constant observation does not; with the ceiling repair there −0.193
        against −0.191. ``bench/search_quality.py --methods rl-alone-ceiling-policy rl-alone-policy``.
        ``objective``: one step too, but the action re-weighs each layer's estimated error (the
        sensitivity the ILP baseline uses) by ``exp(objective_span · a)`` and sets the budget
        the ILP is solved for, from ``prior_floor`` × the budget to the whole of it; the ILP
        allocates (:mod:`haq.search.objective`). Why: the ILP wins on an exact allocator for an
        error model the agent cannot see; this agent searches for where that model is wrong.
        ``auto`` resolves to SAC, never centred (its warm-up draws random objectives). It
        transfers to the same model on another device (:mod:`haq.transfer.run`), decoded there
        with that device's costs.
        ``portfolio``: the agents of ``portfolio`` one after the other, each a fresh agent with
        these settings and that decision for an equal share of the episodes (the earlier ones'
        episodes stand; the final pick chooses among all of them). Why: on the two robust-reward
        workloads each single agent wins one and loses the other (digits CNN, 10 seeds: the
        objective agent +1.225 against the per-layer agent's +1.074 and greedy's +1.188; digits
        MLP: +0.858 against +1.126 and random search's +1.076), and nothing in the reward says
        which workload is which; an agent that allocates by the sensitivity model wins where the
        model is right, one that learns from rewards alone where it is not. Measured on seeds
        10-19 (never run before; 300 evaluations, full evaluator, Bit Fusion at 0.5x latency),
        median final test reward against the per-layer agent on the same seeds: CNN +1.225
        against +1.097 (greedy +1.188), MLP +1.299 against +1.245 (random search +1.076); on a
        second fresh machine, whose trained models moved every figure: CNN +1.169 against +1.148
        (greedy +1.244), MLP +0.885 against +0.838 (random search +0.831).
    portfolio: the decisions a ``portfolio`` search runs, in order (two or more, each once).
    objective_span: the largest factor (as ``exp(span)``) by which a ``decision = "objective"``
        agent scales one layer's estimated error up or down.
    redraws: an off-policy ``decision = "objective"`` agent's action whose policy repeats one its
        run has proposed (or another episode of its batch proposes) is drawn again from its policy,
        up to this many times (:mod:`haq.search.redraw`); 0 (default): never. Why: a repeat is a
        cached lookup that counts as an episode and, with workers, leaves one idle while its batch
        is scored. Measured as a default and not adopted (rule written before the seeds ran: at or
        above the portfolio without it on both digits models): on the digits CNN (seeds 10-19,
        full evaluator, 300 evaluations) the portfolio with ``redraws = 8`` proposed 202 distinct
        policies per run against 169 and reached a median final test reward of +1.069 against
        +1.169 (better on 2 seeds, worse on 4; cross-fitted −0.080): its pick landed on the ILP's
        own allocation in 7 of 10 seeds (``bench/search_quality.py --methods rl-redraw``; the MLP
        was not run once the CNN had failed the rule). Two workers ran it 1.81x as fast as one
        (1.63x without, ``bench/parallel.py --redraws 8``), but every episode being an evaluation,
        a 48-episode search took 13.5 s on 2 workers against 9.7 s without.
    redraw_from: where a repeat's replacement comes from (:mod:`haq.search.redraw`): ``agent``
        (default), another draw from the agent's policy; ``objective``, the same action solved
        again with the run's proposed policies cut off, its objective's best allocation not yet
        proposed. Why: on the digits MLP the agent settled beside the ILP's best answer (the ILP's
        17th next-best solution) and never proposed its ten best (stop 62); a narrowed agent then
        walks its own objective's next-best solutions, as the ILP's ladder does. Measured with
        ``redraws = 8`` (``bench/search_quality.py --methods rl-next``, rules written before the
        runs, full evaluator, 300 evaluations): digits MLP seeds 90-99 median final test reward
        +1.350 against the default's +1.280 (10-seed judge +1.385 against +1.291, better on 8
        seeds, worse on 2; the ILP +1.255 / +1.276); digits CNN seeds 60-69 +1.234 against +1.192
        but under the judge +1.131 against +1.232 (worse on 7), +1.213 (worse on 6) once the pick
        counted replaced proposals (:func:`haq.runs.final_pick.with_asked`); fresh seeds with that
        pick, MLP 100-109 +1.350 against +1.226 (judge better on 8, worse on 1), CNN 70-79 +1.069
        against +1.179 (judge worse on 8): not the default. A run stored before this field existed
        drew from the agent.
    prior_decision: what ``decision = "auto"`` resolves to on a problem with an action prior:
        ``objective`` (default since 2026-12-07, measured under ``decision``) or ``layer``, the
        centred per-layer agent. A run stored before this field existed resolved it to ``layer``,
        so it resumes as it ran (``haq search --resume --prior-decision layer``).
    """

    algo: str = "auto"
    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    batch_size: int = 64
    tau: float = 0.01
    warmup_episodes: int = 10
    noise_sigma: float = 0.5
    noise_decay: float = 0.99
    noise_shift: float = 0.0
    reward_baseline: bool | None = None
    baseline_momentum: float = 0.9
    gradient_steps: int = 32
    ppo_epochs: int = 10
    start_at_centre: bool | None = None
    initial_log_std: float = -1.5
    ent_coef_init: float | None = None
    target_entropy: float | None = None
    noise_layers: float = 0.0
    centred_noise_sigma: float = 0.25
    centred_noise_decay: float = 0.98
    centred_noise_layers: float = 3.0
    noise_reheat: float | None = None
    centred_noise_reheat: float | None = None
    actor_delay: int | None = None
    actor_every: int | None = None
    cost_credit: bool | None = None
    prior_rungs: int = 6
    prior_floor: float = 0.5
    prior_centre: str = "cheapest_tied"
    imitation: float | None = None
    imitation_episodes: int = 5
    overlap_updates: bool | None = None
    decision: str = "auto"
    objective_span: float = 2.0
    portfolio: tuple[str, ...] = ("layer", "objective")
    redraws: int = 0
    redraw_from: str = field(default="agent", metadata=absent_means("agent"))
    prior_decision: str = field(default="objective", metadata=absent_means("layer"))

    def _resolved_algo(self) -> str:
        """The algorithm of a resolved config; asking an unresolved one is a bug in the caller."""
        if self.algo == "auto":
            raise InternalError("AgentConfig.algo 'auto' must be resolved with for_problem() before use")
        return self.algo

    @property
    def uses_baseline(self) -> bool:
        """Whether the reward baseline wrapper is applied (of a resolved config: see :meth:`for_problem`)."""
        algo = self._resolved_algo()
        return algo == "ddpg" if self.reward_baseline is None else self.reward_baseline

    @property
    def replaces_repeats(self) -> bool:
        """Whether this agent replaces its repeating proposals (of a resolved config: see
        :meth:`for_problem`): ``redraws`` applies to an off-policy objective agent only, as PPO's
        update needs the log-probability of the action its rollout holds."""
        algo = self._resolved_algo()
        return self.redraws > 0 and self.decision == "objective" and algo != "ppo"

    def resolved_decision(self, has_prior: bool) -> str:
        """``decision`` with ``auto`` resolved for a problem with or without an action prior."""
        if self.decision != "auto":
            return self.decision
        objective_ok = self.algo not in IMITATING and not self.start_at_centre
        if not objective_ok:
            return "layer"
        return self.prior_decision if has_prior else PORTFOLIO

    def phases(self, episodes: int, has_prior: bool) -> tuple[tuple[AgentConfig, int], ...]:
        """The agents a search of ``episodes`` runs on a problem with or without an action prior,
        in order, each with the episode count the log holds when it is done: this config alone,
        or a ``portfolio``'s members (each this config with its decision) splitting the episodes
        equally (the earlier ones round down)."""
        decision = self.resolved_decision(has_prior)
        if decision != PORTFOLIO:
            return ((dataclasses.replace(self, decision=decision), episodes),)
        n = len(self.portfolio)
        return tuple((dataclasses.replace(self, decision=d), episodes * (i + 1) // n) for i, d in enumerate(self.portfolio))

    def for_problem(self, has_prior: bool) -> AgentConfig:
        """This config with its automatic choices made for an environment with or without an
        action prior: the algorithm, ``start_at_centre``, the warm-up a centred agent skips, its
        local noise, SAC's entropy start, the decision (``auto``; a ``portfolio`` is resolved
        member by member, :meth:`phases`)."""
        decision = self.resolved_decision(has_prior)
        if decision == PORTFOLIO:
            raise InternalError("a portfolio's agents are resolved one by one: split the config with phases() first")
        return dataclasses.replace(self, decision=decision)._settings_for(has_prior)

    def _settings_for(self, has_prior: bool) -> AgentConfig:
        """:meth:`for_problem` of a config whose decision is one agent's."""
        default_centred = has_prior and self.decision != "objective"
        centred = default_centred if self.start_at_centre is None else self.start_at_centre
        algo = ("ddpg" if centred and self.decision == "layer" else "sac") if self.algo == "auto" else self.algo
        ent = self.ent_coef_init if self.ent_coef_init is not None else (0.01 if centred else 1.0)
        imitation = self.imitation if self.imitation is not None else (IMITATION if centred and algo in IMITATING else 0.0)
        if not centred:
            credit = bool(self.cost_credit)
            delay = self.actor_delay or 0
            return dataclasses.replace(
                self,
                algo=algo,
                start_at_centre=False,
                ent_coef_init=ent,
                prior_rungs=0,
                cost_credit=credit,
                actor_delay=delay,
                imitation=imitation,
            )
        return dataclasses.replace(
            self,
            algo=algo,
            start_at_centre=True,
            ent_coef_init=ent,
            warmup_episodes=0,
            noise_sigma=self.centred_noise_sigma,
            noise_decay=self.centred_noise_decay,
            noise_layers=self.centred_noise_layers,
            noise_reheat=self.centred_noise_reheat,
            prior_rungs=self.prior_rungs if has_prior else 0,
            cost_credit=True if self.cost_credit is None else self.cost_credit,
            actor_delay=CENTRED_ACTOR_DELAY if self.actor_delay is None else self.actor_delay,
            actor_every=CENTRED_ACTOR_EVERY if self.actor_every is None else self.actor_every,
            imitation=imitation,
        )

    def overlaps(self, batch: int, hardware_feedback: bool) -> bool:
        """Whether a resolved agent collecting ``batch`` episodes at a time defers its updates
        (``overlap_updates``); PPO learns from its own current policy and never does."""
        if self.algo == "ppo":
            return False
        if self.overlap_updates is not None:
            return self.overlap_updates
        return batch > 1 and not hardware_feedback

    def __post_init__(self) -> None:
        choice("agent", self.algo, AGENTS)
        choice("prior_centre", self.prior_centre, PRIOR_CENTRES)
        choice("decision", self.decision, DECISIONS)
        object.__setattr__(self, "portfolio", tuple(self.portfolio))
        if (
            len(self.portfolio) < 2
            or len(set(self.portfolio)) < len(self.portfolio)
            or not all(isinstance(d, str) and d in AGENT_DECISIONS for d in self.portfolio)
        ):
            raise ConfigError(
                f"portfolio must list two or more different decisions of {', '.join(AGENT_DECISIONS)}, got {list(self.portfolio)}"
            )
        decisions = self.portfolio if self.decision == PORTFOLIO else (self.decision,)
        whole = [d for d in decisions if d in WHOLE_DECISIONS]
        if whole and self.algo in IMITATING:
            raise ConfigError(
                f"decision '{whole[0]}' needs agent sac, ppo or auto, not {self.algo}: its exploration moves a few "
                "layers per episode one layer at a time (noise_layers), which a whole-policy step cannot"
            )
        if "objective" in decisions and self.start_at_centre:
            raise ConfigError(
                "decision 'objective' cannot start at the centre: its action 0 is the ILP's own allocation, "
                "so start_at_centre would make it a seeded agent; leave start_at_centre unset or false"
            )
        positive("objective_span", self.objective_span)
        count("redraws", self.redraws, 0)
        choice("redraw_from", self.redraw_from, REDRAW_SOURCES)
        choice("prior_decision", self.prior_decision, PRIOR_DECISIONS)
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be a non-empty list of positive layer sizes, got {list(self.hidden)}")
        positive("learning_rate", self.learning_rate)
        count("batch_size", self.batch_size)
        count("warmup_episodes", self.warmup_episodes, 0)
        count("ppo_epochs", self.ppo_epochs)
        unit_interval("tau", self.tau)
        unit_interval("noise_decay", self.noise_decay)
        unit_interval("baseline_momentum", self.baseline_momentum, open_low=False, open_high=True)
        finite("noise_sigma", self.noise_sigma, 0.0)
        finite("noise_shift", self.noise_shift, 0.0)
        finite("centred_noise_sigma", self.centred_noise_sigma, 0.0)
        unit_interval("centred_noise_decay", self.centred_noise_decay)
        finite("noise_layers", self.noise_layers, 0.0)
        finite("centred_noise_layers", self.centred_noise_layers, 0.0)
        for name in ("noise_reheat", "centred_noise_reheat"):
            reheat = getattr(self, name)
            if reheat is not None:
                finite(name, reheat, 1.0)
        count("prior_rungs", self.prior_rungs, 0)
        if self.actor_delay is not None:
            count("actor_delay", self.actor_delay, 0)
        if self.actor_every is not None:
            count("actor_every", self.actor_every)
        unit_interval("prior_floor", self.prior_floor)
        if self.imitation is not None:
            finite("imitation", self.imitation, 0.0)
        count("imitation_episodes", self.imitation_episodes)
        finite("initial_log_std", self.initial_log_std)
        if self.ent_coef_init is not None:
            positive("ent_coef_init", self.ent_coef_init)
        if self.target_entropy is not None:
            finite("target_entropy", self.target_entropy, high=MAX_SQUASHED_ENTROPY)
        if self.gradient_steps == 0 or self.gradient_steps < -1:
            raise ConfigError(f"gradient_steps must be >= 1 or -1 (one per collected step), got {self.gradient_steps}")


@dataclass(frozen=True)
class SearchConfig:
    """A whole search run: the environment, the agent, how many episodes, and the seed."""

    VERSION: ClassVar[int] = 1

    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    episodes: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        count("episodes", self.episodes)
        count("seed", self.seed, 0)
