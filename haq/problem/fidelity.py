"""Multi-fidelity scoring: every policy gets the cheap evaluation, only those that can still matter
get the full one (DQ fine-tune + attacks), which costs ~15× more.

The cheap evaluation is ``EvalConfig.screen_kind``: by default ``screen``, clean accuracy plus
accuracy on PGD examples crafted once on the float model, so the cheap reward already carries a
robust term on the full reward's scale; ``cheap`` (clean only) is the screen measured before it.

The screen predicts a policy's full reward from its cheap reward and its bit widths with a
regression fitted on the policies scored at both fidelities (:class:`Calibration`; the first
``screen_calibration`` policies always are, fewer with ``screen_patience`` once the best full
reward stops rising, and so is every policy that passes the screen, so the fit keeps improving
where it matters, near the best). A policy is evaluated in full when

    predicted full reward + screen_z · residual std  ≥  best full reward so far,

i.e. when it could still become the best policy of the run; the others keep the prediction.
At least ``screen_min_fraction`` of the policies get the full evaluation (those predicted best
among the rest of a batch), so a prediction that is confidently wrong early cannot starve the
fit of the data that would correct it; at most ``screen_max_fraction`` of the run's episodes do
(its :attr:`FidelityScreen.allowance`): once it is spent, every new policy keeps its prediction.

What the agent learns from: a screened-out policy's reward is the predicted full reward, not
its cheap reward. The cheap and full rewards differ systematically (the fine-tune recovers
accuracy, the robust term is absent from the cheap one), so mixing raw rewards of two
fidelities would teach the critic that the fidelity, not the policy, changes the reward. The
least-squares prediction puts both on the full scale and is unbiased under the fitted model; an
optimistic bound instead would inflate exactly the policies the screen judged poor. Errors of
the prediction cannot promote a policy to best: it is screened out only when the prediction is
below the best full reward (or, with the allowance spent, gets a reward just below it), so the
best episode of a run is always one scored in full.

What limits the screen: on the policies a search visits, the full reward is mostly how the
policy's short DQ fine-tune turned out. Over 120 policies of one 300-episode full-only digits
search each, the full evaluator under a second seed ranks them with Spearman 0.37 (MLP) / 0.25
(CNN) against the first, the screen 0.19 / 0.16. A screen after a 2-4-batch DQ fine-tune (same
seed and data order) ranks far better (0.66 MLP at 2 batches, 0.68 CNN at 4) but searched no
better: ten seeds, 100 evaluations, one day, 10 calibrating policies each, median final test
reward MLP +1.054 against this screen's +1.051 (full-only +1.196), CNN +0.864 against +1.085
(+1.114), at ~1/3 of a full evaluation per screen instead of ~1/15 (``bench/search_quality.py``
with such a screen kind; not kept).

Every decision depends only on the policies and on the results before the batch (in batch
order), so a run is the same for any number of workers. When the run is over, its final pick
first gives what is left of a third of its episodes in full evaluations to the screened-out
policies the final prediction rates best (:meth:`FidelityScreen.promote`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from haq.evaluation.evaluators import CachedEvaluator, PolicyKey, policy_key
from haq.evaluation.metrics import PolicyMetrics, ReferenceMetrics
from haq.quant import QuantPolicy

CHEAP = "cheap"
FULL = "full"
RewardFn = Callable[[PolicyMetrics, ReferenceMetrics], float]
SCREEN_FEATURES = ("cheap_reward", "mean_w_bits", "mean_a_bits")
"""What :func:`screen_features` returns, in order (the first is what an offset model shifts)."""


@dataclass(frozen=True)
class Scored:
    """A policy's metrics and reward, and which evaluator scored it.

    fidelity: ``full``, or the screening evaluator's kind (``screen`` or ``cheap``): the
        evaluator whose metrics these are.
    cheap_reward: with multi-fidelity scoring, the cheap evaluator's reward (``None`` otherwise);
        for a policy scored in full it calibrates the screen, also after a resume.
    cached: no evaluation ran for it (scored before, or earlier in the same batch).
    """

    metrics: PolicyMetrics
    reward: float
    fidelity: str = FULL
    cheap_reward: float | None = None
    cached: bool = False

    def annotations(self) -> dict[str, object]:
        """What an episode record carries about how it was scored."""
        return {"fidelity": self.fidelity, **({} if self.cheap_reward is None else {"cheap_reward": self.cheap_reward})}

    @classmethod
    def from_record(cls, metrics: PolicyMetrics, reward: float, extra: Mapping[str, Any]) -> "Scored":
        """A logged episode as it was scored, from its :meth:`annotations` (a record without them
        was scored in full, as every policy was before multi-fidelity scoring)."""
        cheap = extra.get("cheap_reward")
        return cls(metrics, reward, str(extra.get("fidelity", FULL)), None if cheap is None else float(cheap), cached=True)


def screen_features(policy: QuantPolicy, cheap_reward: float) -> np.ndarray:
    """What the full reward is predicted from: the cheap reward and the policy's mean weight and
    activation bits (the robust term the cheap evaluator cannot see moves with the bit widths)."""
    bits = list(policy.layers.values())
    return np.array([cheap_reward, sum(b.w_bits for b in bits) / (8 * len(bits)), sum(b.a_bits for b in bits) / (8 * len(bits))])


@dataclass(frozen=True)
class Prediction:
    """A fitted cheap → full reward model: ``full ≈ offset + coef · features``, residual std ``std``."""

    offset: float
    coef: np.ndarray
    std: float

    def __call__(self, features: np.ndarray) -> float:
        return float(self.offset + self.coef @ features)


@dataclass
class Calibration:
    """The policies scored at both fidelities and the prediction fitted on them.

    Until there are twice as many of them as parameters, the prediction is the cheap reward plus
    the mean offset (the full and cheap rewards of the same policy differ mostly by a constant);
    from then on ridge regression on :func:`screen_features`. The residual standard deviation
    has the fitted parameters' degrees of freedom removed; it is infinite before two policies.
    """

    rows: list[tuple[np.ndarray, float]] = field(default_factory=list)
    ridge: float = 1e-2

    def add(self, features: np.ndarray, full: float) -> None:
        """One policy scored at both fidelities."""
        self.rows.append((np.asarray(features, dtype=np.float64), float(full)))

    def fit(self) -> Prediction:
        """The current prediction (see the class docstring)."""
        d = len(SCREEN_FEATURES)
        unit = np.eye(d)[0]
        if not self.rows:
            return Prediction(0.0, unit, math.inf)
        x = np.stack([r[0] for r in self.rows])
        f = np.array([r[1] for r in self.rows])
        n = len(f)
        if n < 2 * (d + 1):
            offset = float(np.mean(f - x[:, 0]))
            std = float(np.std(f - x[:, 0] - offset, ddof=1)) if n >= 2 else math.inf
            return Prediction(offset, unit, std)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - mean) / scale
        coef_z = np.linalg.solve(z.T @ z + self.ridge * n * np.eye(d), z.T @ (f - f.mean()))
        coef = coef_z / scale
        offset = float(f.mean() - coef @ mean)
        resid = f - (offset + x @ coef)
        return Prediction(offset, coef, float(np.sqrt(np.sum(resid**2) / (n - d - 1))))


class FidelityScreen:
    """Scores batches with the cheap evaluator, and in full those that can still beat the best."""

    def __init__(
        self,
        cheap: CachedEvaluator,
        full: CachedEvaluator,
        reward: RewardFn,
        calibration: int,
        z: float,
        min_fraction: float,
        label: str = CHEAP,
        patience: int = 0,
    ) -> None:
        self.cheap = cheap
        self.label = label
        """The fidelity a screened-out policy is logged with: the screening evaluator's kind."""
        self.full = full
        self._reward = reward
        self._calibration_size = calibration
        self._patience = patience
        self._improved_at = 0
        """Calibrating policies scored when the best full reward last rose."""
        self.calibrated_early: int | None = None
        """How many policies calibrated before the patience ended the calibration (``None``: it has not)."""
        self._z = z
        self._min_fraction = min_fraction
        self.calibration = Calibration()
        self.best_full: float | None = None
        self.allowance: int | None = None
        """The most distinct policies the run's search evaluates in full (``None``: no limit); a
        run sets it from its length (:meth:`~haq.problem.problem.SearchProblem.plan`)."""
        self.full_evaluations = 0
        self.scored = 0
        self._cheap_reward: dict[PolicyKey, float] = {}
        """Cheap rewards of the policies judged in full (they need no cheap evaluation again)."""

    def score_many(self, policies: Sequence[QuantPolicy]) -> list[Scored]:
        """Cheap scores for the policies not judged in full before, full ones for those the screen
        passes (see the module docstring); results in batch order."""
        was_full = seen_before(self.full, policies)
        was_cheap = seen_before(self.cheap, policies)
        known = [policy_key(p) in self._cheap_reward for p in policies]
        unjudged = [p for p, k in zip(policies, known) if not k]
        cheap_metrics = iter(self.cheap.evaluate_many(unjudged))
        metrics: list[PolicyMetrics | None] = [None if k else next(cheap_metrics) for k in known]
        cheap = [
            self._cheap_reward[policy_key(p)] if m is None else self._reward(m, self.cheap.reference)
            for p, m in zip(policies, metrics)
        ]
        predict = self.calibration.fit()
        predicted = [predict(screen_features(p, c)) for p, c in zip(policies, cheap)]
        chosen: list[int] = []
        new: set[PolicyKey] = set()  # distinct policies this batch is the first to evaluate in full

        def room(i: int) -> bool:
            """Whether policy ``i`` may be evaluated in full within the allowance (it then counts)."""
            key = policy_key(policies[i])
            if policies[i] in self.full or key in new:
                return True
            if self.allowance is not None and self.full_evaluations + len(new) >= self.allowance:
                return False
            new.add(key)
            return True

        for i, guess in enumerate(predicted):
            calibrating = self.calibrated_early is None and len(self.calibration.rows) + len(chosen) < self._calibration_size
            could_win = self.best_full is None or guess + self._z * predict.std >= self.best_full
            if known[i] or ((calibrating or could_win) and room(i)):
                chosen.append(i)
        short = math.ceil(self._min_fraction * (self.scored + len(policies))) - (self.full_evaluations + len(chosen))
        rest = sorted((i for i in range(len(policies)) if i not in chosen), key=lambda i: (-predicted[i], i))
        chosen = sorted(chosen + [i for i in rest[: max(short, 0)] if room(i)])
        self.scored += len(policies)
        self.full_evaluations += len(new)
        evaluated = zip(chosen, self.full.evaluate_many([policies[i] for i in chosen]))
        judged = {i: Scored(m, self._reward(m, self.full.reference), FULL, cheap[i], was_full[i]) for i, m in evaluated}
        for i, scored in judged.items():  # in batch order: the calibration and the best full reward first
            self._learn(policies[i], scored)
        out: list[Scored] = []
        for i, (c, m) in enumerate(zip(cheap, metrics)):
            if i in judged:
                out.append(judged[i])
            elif m is not None:
                out.append(Scored(m, _below(predicted[i], self.best_full), self.label, c, was_cheap[i]))
        return out

    def promote(
        self, policies: Sequence[QuantPolicy], cheap_rewards: Sequence[float], allowance: int
    ) -> list[tuple[int, Scored]]:
        """Full scores for the ``allowance`` distinct policies (of screened-out ``policies`` with
        their cheap rewards) that the current prediction rates best: (index in ``policies``,
        score), best predicted first.

        Why at the end: the prediction a policy was screened out by was fitted on the few full
        scores before it; the final one has all of them. With what was left of a third of the
        episodes spent this way before the final pick (:mod:`haq.runs.final_pick`), the median
        final test reward of ten multi-fidelity searches (``bench/search_quality.py``, 100
        evaluations, same seeds) went from +0.762 to +0.939 on the digits MLP (4 seeds better,
        none worse) and stayed level on the CNN (+1.135, +1.116: 2 better, 3 worse)."""
        predict = self.calibration.fit()
        order: list[int] = []
        seen: set[PolicyKey] = set()
        ranked = sorted(range(len(policies)), key=lambda i: (-predict(screen_features(policies[i], cheap_rewards[i])), i))
        for i in ranked:
            key = policy_key(policies[i])
            if key not in seen and policies[i] not in self.full and len(order) < allowance:
                seen.add(key)
                order.append(i)
        chosen = [policies[i] for i in order]
        self.full_evaluations += len(chosen)
        out = []
        for i, m in zip(order, self.full.evaluate_many(chosen)):
            scored = Scored(m, self._reward(m, self.full.reference), FULL, cheap_rewards[i])
            self._learn(policies[i], scored)
            out.append((i, scored))
        return out

    def remember(self, policy: QuantPolicy, scored: Scored) -> None:
        """Re-load a logged result (resume): its metrics into the cache of its fidelity, the
        calibration and the counts, so the screen decides on as it would have."""
        if scored.fidelity == FULL and policy not in self.full:
            self.full_evaluations += 1
        (self.full if scored.fidelity == FULL else self.cheap).remember(policy, scored.metrics)
        self.scored += 1
        self._learn(policy, scored)

    def _learn(self, policy: QuantPolicy, s: Scored) -> None:
        """A full score calibrates the line (once per distinct policy) and may raise the best."""
        if s.fidelity != FULL:
            return
        key = policy_key(policy)
        if s.cheap_reward is not None and key not in self._cheap_reward:
            self._cheap_reward[key] = s.cheap_reward
            self.calibration.add(screen_features(policy, s.cheap_reward), s.reward)
            self._check_patience(self.best_full is None or s.reward > self.best_full)
        self.best_full = s.reward if self.best_full is None else max(self.best_full, s.reward)

    def _check_patience(self, improved: bool) -> None:
        """End the calibration once, with ``patience``, at least half of it is done and the best
        full reward has not risen over the last ``patience`` calibrating policies. It depends only
        on the calibrating policies in order, so a resumed run ends it where the first run did."""
        n = len(self.calibration.rows)
        if improved:
            self._improved_at = n
        half = (self._calibration_size + 1) // 2
        if self._patience and self.calibrated_early is None and half <= n < self._calibration_size:
            if n - self._improved_at >= self._patience:
                self.calibrated_early = n


def _below(prediction: float, ceiling: float | None) -> float:
    """A screened-out policy's reward: its prediction, kept just below the best full reward
    (``ceiling``). Only a policy the allowance could not pay for is predicted that high; the
    prediction then extrapolates beyond every measurement, and a run's best stays a policy
    judged in full."""
    if ceiling is None or prediction < ceiling:
        return prediction
    return math.nextafter(ceiling, -math.inf)


def seen_before(cache: CachedEvaluator, policies: Sequence[QuantPolicy]) -> list[bool]:
    """For each policy of a batch, whether ``cache`` holds it already or it came earlier in the batch."""
    seen: set[PolicyKey] = set()
    out = []
    for policy in policies:
        key = policy_key(policy)
        out.append(key in seen or policy in cache)
        seen.add(key)
    return out


__all__ = ["CHEAP", "FULL", "Calibration", "FidelityScreen", "Prediction", "Scored", "screen_features", "seen_before"]
