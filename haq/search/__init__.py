"""RL search: a stable-baselines3 agent proposes a bit width per layer inside the Gymnasium
environment, and the run directory keeps every episode so a search resumes after a kill.

Life of an episode (the files one episode touches, in order):

1. ``haq/commands/search.py`` – builds the :class:`~haq.problem.problem.SearchProblem` once
   (``haq/jobs/problems.py``: ``make_problem`` resolves the table name) and hands it to
   :func:`run_search`; ``haq/search/run.py`` (:class:`RLSearch`, a
   :class:`~haq.runs.proposer.Proposer`) wraps the environment around it (with the reward
   baseline of ``haq/search/baseline.py`` for DDPG) and lets the agent (``haq/search/agents.py``)
   act; one episode is one pass over the model's quantizable layers.
2. ``envs/mixed_precision.py`` – ``reset`` puts the first layer's features in the observation;
   each ``step`` maps the action in [-1, 1]² to a (w, a) pair of that layer
   (``haq/problem/budget.py``: ``map_action``, centred on the sensitivity ILP's allocation from
   ``haq/problem/allocation.py`` when ``action_prior`` is ``sensitivity``), projects it into the budget (``project``: the
   decided layers, this pair and every later layer at its cheapest still fit) and moves on.
3. At the last layer the env turns the pairs into a :class:`~haq.quant.policy.QuantPolicy`
   (keyed by module name) and asks the problem to score it (``haq/problem/problem.py``).
4. ``haq/evaluation/evaluators.py`` – the cheap evaluator calibrates and measures clean
   accuracy; the full one also DQ fine-tunes (``haq/robust/dq.py``) and takes the worst case
   over attacks (``haq/robust/evaluate.py``); the cost comes from the cost source it was given
   (a device table, ``haq/tables/``, or a hardware-in-the-loop measurer).
5. ``haq/problem/reward.py`` turns metrics into the reward; the env returns it on the last step.
6. ``haq/search/run.py`` – the episode callback commits the record through the agent store
   (``haq/search/checkpoint.py`` on the core of ``haq/runs/checkpoint.py``): an agent
   checkpoint first, then the line in ``episodes.jsonl`` (``haq/runs/rundir.py``), then
   ``best_policy.json``; ``--resume`` reconciles the log with that checkpoint, and the progress
   bar gets a :class:`~haq.runs.progress.Progress`. A centred DDPG / TD3 agent also keeps the
   steps of the run's best episodes (in the checkpoint), which its actor's updates imitate
   (``haq/search/imitation.py``).
7. With ``--workers N`` the episodes run N at a time (``envs/vector.py``) and their policies are
   scored as one batch on the worker pool (``haq/parallel/``); an off-policy agent makes the
   previous batch's update meanwhile (``haq/search/overlap.py``).
8. With ``AgentConfig.decision = "policy"`` the agent takes one step per episode: its action holds
   every layer's, which ``haq/search/whole_policy.py`` feeds through steps 2-6 unchanged; with
   ``"objective"`` its action sets the sensitivity ILP's objective, and ``haq/search/objective.py``
   turns the ILP's allocation into those per-layer actions.
"""

from __future__ import annotations

from haq.search.config import AGENTS, AgentConfig, SearchConfig
from haq.search.run import RLSearch, run_search

__all__ = ["AGENTS", "AgentConfig", "RLSearch", "SearchConfig", "run_search"]
