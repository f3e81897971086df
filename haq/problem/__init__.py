"""The search problem: settings (``config``), budget and action projection (``budget``), reward
(``reward``), and :class:`~haq.problem.problem.SearchProblem`, built from a table it is given.
"""
