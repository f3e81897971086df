"""RL search: a stable-baselines3 agent proposes a bit width per layer inside the Gymnasium
environment, and the run directory keeps every episode so a search resumes after a kill.

Life of an episode (the files one episode touches, in order):

1. ``haq/search/run.py`` – :func:`run_search` builds the environment around a
   :class:`~haq.problem.problem.SearchProblem` and lets the agent act; one episode is one pass
   over the model's quantizable layers.
2. ``envs/mixed_precision.py`` – ``reset`` puts the first layer's features in the observation;
   each ``step`` maps the action in [-1, 1]² to a (w, a) pair of that layer
   (``haq/problem/budget.py``: ``map_action``), projects it into the budget (``project``: the
   decided layers, this pair and every later layer at its cheapest still fit) and moves on.
3. At the last layer the env turns the pairs into a :class:`~haq.quant.policy.QuantPolicy`
   (keyed by module name) and asks the problem to score it (``haq/problem/problem.py``).
4. ``haq/evaluation/evaluators.py`` – the cheap evaluator calibrates and measures clean
   accuracy; the full one also DQ fine-tunes (``haq/robust/dq.py``) and takes the worst case
   over attacks (``haq/robust/evaluate.py``); the cost comes from the cost source it was given
   (a device table, ``haq/tables/``, or a hardware-in-the-loop measurer).
5. ``haq/problem/reward.py`` turns metrics into the reward; the env returns it on the last step.
6. ``haq/runs/`` – the episode logger appends the record to ``episodes.jsonl``, keeps
   ``best_policy.json`` and saves an agent checkpoint that ``--resume`` reconciles with the log.
"""

from __future__ import annotations

from haq.search.config import AGENTS, AgentConfig, SearchConfig
from haq.search.run import SearchResult, run_search

__all__ = ["AGENTS", "AgentConfig", "SearchConfig", "SearchResult", "run_search"]
