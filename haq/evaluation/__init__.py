"""How a policy is scored, given the cost sources to price it with (this package builds none).

``config`` (:class:`EvalConfig`), ``metrics`` (:class:`PolicyMetrics`, :class:`ReferenceMetrics`),
``evaluators`` (the :class:`Evaluator` protocol, the cheap / full evaluators, the cache),
``final`` (``haq evaluate``'s thorough scoring), ``ptq`` (quantize a copy of a float model).
"""
