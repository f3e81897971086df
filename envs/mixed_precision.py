"""The mixed-precision search as a Gymnasium environment (one step per quantizable layer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import latency_tables
from haq.core.errors import UsageError
from haq.core.types import BitPair
from haq.problem.budget import apply_request, encode_pair, map_action, settle_episode
from haq.problem.config import EnvConfig
from haq.problem.problem import Scored, SearchProblem, build_problem
from haq.problem.sensitivity import Sensitivity
from haq.quant import QuantPolicy

OBS_FEATURES = (
    "is_conv",
    "is_dwconv",
    "is_linear",
    "in_channels",
    "out_channels",
    "kernel",
    "stride",
    "groups_ratio",
    "input_hw",
    "params",
    "macs",
    "position",
    "macs_share",
    "params_share",
    "hw_cost_low",
    "hw_cost_high",
    "budget_used",
    "budget_left",
    "budget_min_rest",
    "prev_w",
    "prev_a",
)
SENSITIVITY_FEATURES = ("sens_weight", "sens_act", "sens_falloff", "sens_used")
OBSERVATION_FEATURES = {"v0": OBS_FEATURES, "v1": OBS_FEATURES + SENSITIVITY_FEATURES}
"""Feature names of each observation layout (``EnvConfig.observation``); a saved agent records its layout."""
_LOG_SCALE = {"in_channels": 12.0, "out_channels": 12.0, "input_hw": 16.0, "params": 24.0, "macs": 32.0}


class MixedPrecisionEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose weight and activation bit widths layer by layer under a device cost budget.

    ## Description
    One episode walks the model's quantizable layers (conv / linear, execution order). At each
    step the agent picks the (weight, activation) bit widths of the current layer; the choice
    is projected so the layers still to come, at their cheapest supported setting, fit in what
    is left of the budget (measured with the table's whole-policy cost, boundary costs
    included, so the final policy is always within budget). After the last layer the whole policy is evaluated (calibration,
    optional DQ fine-tune, clean and robust accuracy on a fixed held-out subset, cost from the
    device table) and the reward is paid.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: ``(u_w, u_a)``. ``u_w`` picks among the distinct weight bit
    widths the device supports for this layer within ``[min_bits, max_bits]`` (equal-width bins
    over [-1, 1]); ``u_a`` picks among the activation widths supported with that weight width.
    With ``config.action_prior == "sensitivity"`` the bins are stretched piecewise linearly per
    layer so that 0 lands on the pair of the sensitivity ILP's allocation
    (:attr:`~haq.problem.problem.SearchProblem.prior`), -1 on the lowest and +1 on the highest
    width: an agent whose first actions sit near 0 starts from an informed, in-budget policy and
    learns corrections from real rewards; every pair stays reachable.
    The applied pair may be lower than the requested one when the budget forces it; it is
    reported in ``info`` (with ``applied_action``, an action that maps to it) and in the next
    observation, so a learner can train on what was applied rather than what was asked.
    With ``config.projection`` ``shift`` or ``ceiling`` every request is applied as asked (the
    budget features then measure the requests) and, after the last layer, the whole request is
    lowered until it fits (:func:`~haq.problem.budget.lower_to_fit`; ``shift`` is HAQ's repair):
    the evaluated policy is the last step's ``policy``, and a learner trains on its requests,
    since which of them the repair lowers is decided only at the end.

    ## Observation Space
    ``Box(0, 1, (21,), float32)``; every feature is scaled into [0, 1] with fixed constants
    (not per-model statistics), so one trained policy can run on other models and devices.

    | Num | Feature | Scaling |
    |-----|---------|---------|
    | 0-2 | layer kind one-hot: conv, dwconv, linear | 0 / 1 |
    | 3 | input channels | log2(1+c)/12 |
    | 4 | output channels | log2(1+c)/12 |
    | 5 | kernel size (largest side) | k/7 |
    | 6 | stride (largest) | s/4 |
    | 7 | groups / input channels | ratio |
    | 8 | input height × width | log2(1+hw)/16 |
    | 9 | number of weights | log2(1+n)/24 |
    | 10 | MACs | log2(1+m)/32 |
    | 11 | position in the network | index/(layers−1) |
    | 12 | share of the model's MACs | fraction |
    | 13 | share of the model's weights | fraction |
    | 14 | this layer's cost at its cheapest supported pair / model cost at uniform max bits | fraction (table-derived) |
    | 15 | this layer's cost at its dearest supported pair / model cost at uniform max bits | fraction (table-derived) |
    | 16 | per-layer cost of the layers already decided / budget | fraction |
    | 17 | 1 − feature 16 (budget left) | fraction |
    | 18 | per-layer cheapest cost of this and all later layers / budget | fraction |
    | 19 | previous layer's applied weight bits, (w−min)/(max−min) | 0 at the first layer |
    | 20 | previous layer's applied activation bits, same scaling | 0 at the first layer |

    Values are clipped to [0, 1]. Features 14-15 come from the device table and the budget
    metric, so the same model on another table gives the agent different hardware features.

    With ``config.observation == "v1"`` (``Box(0, 1, (25,))``) four sensitivity features follow,
    from the Fisher estimate of each layer's loss increase per bit width
    (:mod:`haq.problem.sensitivity`, computed once before the search; the ILP baseline's
    information):

    | Num | Feature | Scaling |
    |-----|---------|---------|
    | 21 | this layer's weight error at ``min_bits``, share of the model's (weights + activations) | log2(1 + layers·share)/4 |
    | 22 | the same for its input activations | same |
    | 23 | its error at ``min_bits`` + 2 over its error at ``min_bits`` | ratio |
    | 24 | estimated error of the decided layers / the model's error with each layer at its worst pair | fraction |

    ## Rewards
    0 on every step but the last. The last step pays
    ``acc_weight·100·Δclean + robust_weight·100·Δrobust − cost_weight·cost/budget``
    (Δ against the float model; see :mod:`haq.problem.reward`). The reward is the raw score:
    HAQ's moving-average baseline is applied outside the environment
    (:class:`haq.search.baseline.RewardBaseline`).

    ## Starting State
    The first layer, nothing spent, previous action 0. The episode itself is deterministic:
    there is no random draw (evaluation is seeded per run), so the same seed and actions give
    the same episode; ``np_random`` is still seeded by ``reset`` as Gymnasium requires.

    ## Episode End
    Terminates after the last quantizable layer; never truncates.

    ## Info
    Every step: ``layer``, ``w_bits``, ``a_bits`` (applied), ``requested_bits``, ``projected``,
    ``applied_action`` (the request itself, or the centre of the applied pair's action bin
    when projected), ``budget_used`` (fraction). The last step adds ``policy`` (name → [w, a],
    after the final repair), ``lowered`` (layers the final repair changed; 0 stepwise), ``metrics``
    (:class:`~haq.evaluation.metrics.PolicyMetrics` as a dict), ``reward``, ``cached``,
    ``fidelity`` (the evaluator whose metrics these are: ``cheap`` / ``screen`` / ``full``) and, with the
    multi-fidelity evaluator, ``cheap_reward``.

    ## Arguments
    ``gymnasium.make("haq/MixedPrecision-v0", config=EnvConfig(...))``; ``config`` defaults to
    the embedded default (digits CNN, Bit Fusion table, half the uniform 8-bit latency, cheap
    evaluator). ``problem`` passes an already-built :class:`~haq.problem.problem.SearchProblem`
    (shared evaluator cache); ``cache_dir`` is where the float model is cached.

    Built from a ``config``, the environment resolves ``config.table`` itself with
    :func:`latency_tables.load` (``envs`` sits above the shipped tables, so ``gymnasium.make``
    needs nothing else). It builds no measuring cost source: for hardware feedback pass a
    ``problem`` made by ``haq.jobs.problems.make_problem``.

    ## Version History
    * v0: initial version (one step per layer, 2-D action, projected budget, table features).
      Observation layouts (``EnvConfig.observation``, recorded with a saved agent): ``v0``
      (21 features) and ``v1`` (``v0`` + 4 sensitivity features).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        config: EnvConfig | None = None,
        problem: SearchProblem | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if problem is None:
            cfg = config or EnvConfig()
            cache = Path(cache_dir) if cache_dir is not None else None
            problem = build_problem(cfg, table=latency_tables.load(cfg.table), cache_dir=cache)
        elif config is not None and config != problem.config:
            raise UsageError("pass either config or problem, or a problem built from that config")
        self.problem = problem
        self.config = problem.config
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.features = OBSERVATION_FEATURES[self.config.observation]
        self.observation_space = spaces.Box(0.0, 1.0, (len(self.features),), np.float32)
        self._static = _static_features(problem)
        self._errors = _layer_errors(problem)
        self._sensitivity = _sensitivity_rows(problem, problem.sensitivity) if problem.sensitivity is not None else None
        self._errors_total = sum(max(e.values()) for e in self._errors) if self._errors else 1.0
        self._index = 0
        self._applied: list[BitPair] = []
        self._used = 0.0

    @property
    def num_layers(self) -> int:
        """Episode length."""
        return len(self.problem.budget_model.layers)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._index = 0
        self._applied = []
        self._used = 0.0
        return self._observation(), {"layer": self.problem.layer_names[0]}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, info, policy = self.decide(action)
        if policy is None:
            return obs, 0.0, False, False, info
        return self.finish(info, policy, self.problem.score(policy))

    def decide(self, action: np.ndarray) -> tuple[np.ndarray, dict[str, Any], QuantPolicy | None]:
        """Apply one layer's action; at the last layer also return the finished policy, unscored.

        :meth:`step` is ``decide`` then, at the last layer, :meth:`finish` with the policy's
        score; a vectorized environment (:mod:`envs.vector`) scores the policies of several
        episodes that end together as one batch in between.
        """
        if self._index >= self.num_layers:
            raise UsageError("step() called after the episode ended; call reset() first")
        act = np.asarray(action, dtype=np.float64).reshape(-1)
        if act.shape != (2,) or not np.all(np.isfinite(act)):
            raise UsageError(f"action must be 2 finite numbers in [-1, 1], got {action!r}")
        bm = self.problem.budget_model
        choices = bm.layers[self._index]
        center = self.problem.prior[self._index] if self.problem.prior is not None else None
        requested = map_action(act, choices.pairs, center)
        applied = apply_request(requested, self._applied, bm, self.config.projection)
        if applied == requested:
            applied_action = np.clip(act, -1.0, 1.0).astype(np.float32)
        else:
            applied_action = encode_pair(applied, choices.pairs, center)
        self._used += choices.cost(applied)
        self._applied.append(applied)
        info: dict[str, Any] = {
            "layer": choices.name,
            "w_bits": applied[0],
            "a_bits": applied[1],
            "requested_bits": requested,
            "projected": applied != requested,
            "applied_action": applied_action,
            "budget_used": self._used / self.problem.budget.target,
        }
        self._index += 1
        if self._index < self.num_layers:
            return self._observation(), info, None
        final = settle_episode(self._applied, bm, self.config.projection)
        info["lowered"] = sum(a != b for a, b in zip(self._applied, final))
        self._applied = final
        return self._observation(), info, self.problem.policy(final)

    def finish(
        self,
        info: dict[str, Any],
        policy: QuantPolicy,
        scored: Scored,
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The last step's return once its policy (from :meth:`decide`) is scored."""
        if self._index != self.num_layers:
            raise UsageError("finish() needs the policy of a finished episode; call decide() until it returns one")
        info.update(
            policy={n: [w, a] for n, (w, a) in zip(self.problem.layer_names, self._applied)},
            metrics=scored.metrics.to_dict(),
            reward=scored.reward,
            cached=scored.cached,
            **scored.annotations(),
        )
        return self._observation(), scored.reward, True, False, info

    def _observation(self) -> np.ndarray:
        bm = self.problem.budget_model
        target = bm.budget.target
        i = min(self._index, self.num_layers - 1)
        lo, hi = self.config.min_bits, self.config.max_bits
        prev = self._applied[-1] if self._applied else None
        span = max(hi - lo, 1)
        dynamic = [
            self._used / target,
            1.0 - self._used / target,
            bm.min_cost_from(self._index) / target,
            (prev[0] - lo) / span if prev else 0.0,
            (prev[1] - lo) / span if prev else 0.0,
        ]
        parts = [self._static[i], np.asarray(dynamic)]
        if self._errors is not None and self._sensitivity is not None:
            used = sum(self._errors[j][pair] for j, pair in enumerate(self._applied))
            parts += [self._sensitivity[i], np.asarray([used / max(self._errors_total, 1e-12)])]
        obs = np.concatenate(parts)
        return np.clip(obs, 0.0, 1.0).astype(np.float32)


def _layer_errors(problem: SearchProblem) -> list[dict[BitPair, float]] | None:
    """Each layer's estimated loss increase at each of its pairs (``v1`` observations), else None."""
    sens = problem.sensitivity
    if problem.config.observation == "v0":
        return None
    if sens is None:
        raise UsageError("observation v1 needs the problem's per-layer sensitivity; build the problem with build_problem")
    return [{p: sens.error(c.name, *p) for p in c.pairs} for c in problem.budget_model.layers]


def _sensitivity_rows(problem: SearchProblem, sens: Sensitivity) -> np.ndarray:
    """Static sensitivity features per layer (``v1``): the layer's share of the model's estimated
    error at the lowest bit width, weights and activations apart, on a log scale
    (log2(1 + layers·share)/4: 0.25 for an average layer), and how much of that error is left two
    bits higher (error at min+2 bits / error at min bits). A measured sensitivity may be negative
    (a layer whose quantization removes adversarial loss); it counts as no error here."""
    lo = problem.config.min_bits
    mid = min(lo + 2, 8)
    names = problem.layer_names
    total = sum(max(sens.error(n, lo, lo), 0.0) for n in names) or 1.0
    rows = []
    for n in names:
        s = sens.layers[n]
        here = s.error(lo, lo)
        rows.append(
            [
                math.log2(1 + len(names) * max(s.weight[lo], 0.0) / total) / 4.0,
                math.log2(1 + len(names) * max(s.activation[lo], 0.0) / total) / 4.0,
                s.error(mid, mid) / here if here > 0 else 0.0,
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def _static_features(problem: SearchProblem) -> np.ndarray:
    """Per-layer features that do not change within an episode (rows 0-15 of the table above)."""
    layers = problem.workload.layers
    bm = problem.budget_model
    total_macs = max(sum(layer.macs for layer in layers), 1)
    total_params = max(sum(layer.params for layer in layers), 1)
    rows = []
    for i, (info, choices) in enumerate(zip(layers, bm.layers)):
        sig = info.signature
        raw = {
            "in_channels": sig.in_channels,
            "out_channels": sig.out_channels,
            "input_hw": sig.in_h * sig.in_w,
            "params": info.params,
            "macs": info.macs,
        }
        logs = {k: math.log2(1 + v) / _LOG_SCALE[k] for k, v in raw.items()}
        rows.append(
            [
                float(sig.op == "conv"),
                float(sig.op == "dwconv"),
                float(sig.op == "linear"),
                logs["in_channels"],
                logs["out_channels"],
                max(sig.kernel) / 7.0,
                max(sig.stride) / 4.0,
                sig.groups / sig.in_channels,
                logs["input_hw"],
                logs["params"],
                logs["macs"],
                i / max(len(layers) - 1, 1),
                info.macs / total_macs,
                info.params / total_params,
                choices.cheapest / bm.budget.reference,
                choices.dearest / bm.budget.reference,
            ]
        )
    return np.asarray(rows, dtype=np.float64)
