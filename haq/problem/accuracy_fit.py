"""A policy's accuracy predicted from its estimated error, fitted on policies that were evaluated.

The sensitivity estimate (:func:`haq.problem.allocation.estimated_error`) ranks policies of one
model, on any device, but says nothing of the reward scale; evaluated policies of the same model
and evaluator do. The fit is the least-squares non-increasing function of the estimated error
through their accuracy terms (isotonic regression by pooling adjacent violators): more estimated
error never predicts more accuracy, and nothing else about the curve's shape is assumed.
Between the evaluated errors it interpolates linearly; below the least of them it predicts that
one's value (a more accurate policy is predicted no better than the best-known, a conservative
choice); above the greatest it predicts nothing, since no evaluation says how far accuracy falls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from haq.core.errors import ConfigError


def antitonic_fit(x: Sequence[float], y: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The least-squares non-increasing fit of ``y`` on ``x``: the distinct ``x`` in ascending order
    and the fitted value at each (points sharing an ``x`` enter as their mean, weighted by count)."""
    if len(x) != len(y):
        raise ConfigError(f"a fit needs as many x as y values, got {len(x)} and {len(y)}")
    if not all(math.isfinite(v) for v in (*x, *y)):
        raise ConfigError("a fit needs finite x and y values")
    groups: dict[float, list[float]] = {}
    for xi, yi in zip(x, y):
        groups.setdefault(float(xi), []).append(float(yi))
    keys = sorted(groups)
    blocks: list[list[float]] = []  # [sum, weight, first index, last index]
    for i, k in enumerate(keys):
        blocks.append([sum(groups[k]), float(len(groups[k])), i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, weight, _, last = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += weight
            blocks[-1][3] = last
    fitted = [0.0] * len(keys)
    for total, weight, first, last in blocks:
        for i in range(int(first), int(last) + 1):
            fitted[i] = total / weight
    return tuple(keys), tuple(fitted)


@dataclass(frozen=True)
class AccuracyFit:
    """Accuracy term (reward units) as a non-increasing function of estimated error (see the module docstring)."""

    errors: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.errors or len(self.errors) != len(self.values):
            raise ConfigError("an accuracy fit needs at least one point, with one value per error")

    @classmethod
    def fit(cls, errors: Sequence[float], accuracy_terms: Sequence[float]) -> AccuracyFit:
        """The fit through evaluated policies' estimated errors and accuracy terms."""
        return cls(*antitonic_fit(errors, accuracy_terms))

    def predict(self, error: float) -> float | None:
        """The predicted accuracy term at ``error``; ``None`` above the greatest evaluated error."""
        xs, ys = self.errors, self.values
        if error > xs[-1]:
            return None
        if error <= xs[0]:
            return ys[0]
        hi = next(i for i, x in enumerate(xs) if x >= error)
        lo = hi - 1
        t = (error - xs[lo]) / (xs[hi] - xs[lo])
        return ys[lo] + t * (ys[hi] - ys[lo])


__all__ = ["AccuracyFit", "antitonic_fit"]
