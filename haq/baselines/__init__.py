"""Non-RL baselines for the bit-width search, scored by the search's own evaluator and reward.

``uniform`` (the best uniform precision within budget), ``random`` (random projected
policies), ``greedy`` (sensitivity-guided descent) and ``ilp`` (HAWQ-V3's integer program on
scipy's HiGHS). :func:`run_baseline` (the :class:`Baseline` proposer) writes the search's
run-directory format through the shared checkpoint core, so ``haq plot`` and the benchmark
compare them with a search directly.
"""

from haq.baselines.candidates import METHODS, Candidate
from haq.baselines.run import Baseline, BaselineConfig, baseline_env, run_baseline
from haq.problem.measured_sensitivity import measure_sensitivity
from haq.problem.reward_sensitivity import reward_sensitivity
from haq.problem.sensitivity import (
    LayerSensitivity,
    Sensitivity,
    SensitivityConfig,
    estimate_sensitivity,
)

__all__ = [
    "METHODS",
    "Baseline",
    "BaselineConfig",
    "Candidate",
    "LayerSensitivity",
    "Sensitivity",
    "SensitivityConfig",
    "baseline_env",
    "estimate_sensitivity",
    "measure_sensitivity",
    "reward_sensitivity",
    "run_baseline",
]
