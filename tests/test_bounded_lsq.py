"""The table fits' bounded least squares: scipy's trf warns on a zero-times-infinite step it then
discards; the fit neither warns nor loses accuracy, and a non-finite result is solved exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import lsq_linear

from haq.hardware import graph_fit

# a bounded fit on which trf's step selection multiplies 0 by inf (found by a random search)
A = np.array([[0.737, 0.595, 0.0, 0.0], [0.787, 0.582, 0.0, 0.0]])
B = np.array([0.888, 0.36])
LO, HI = np.array([0.0, 0.0, 0.0, -np.inf]), np.full(4, np.inf)


def _cost(x: np.ndarray) -> float:
    return float(0.5 * np.sum((A @ x - B) ** 2))


def test_the_fit_that_makes_trf_warn_is_solved_silently_to_the_exact_cost() -> None:
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        lsq_linear(A, B, bounds=(LO, HI))
    assert any(issubclass(w.category, RuntimeWarning) for w in raw)  # scipy itself still warns here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = graph_fit._lsq(A, B, LO, HI)
    exact = lsq_linear(A, B, bounds=(LO, HI), method="bvls").x
    assert np.all(np.isfinite(x)) and np.all(x >= LO) and _cost(x) == pytest.approx(_cost(exact), abs=1e-12)


def test_a_result_that_is_not_finite_is_solved_again_with_bvls(monkeypatch: pytest.MonkeyPatch) -> None:
    real = lsq_linear

    def broken_trf(a: np.ndarray, b: np.ndarray, bounds: object, method: str = "trf") -> object:
        res = real(a, b, bounds=bounds, method=method)
        if method == "trf":
            res.x = np.full_like(res.x, np.nan)
        return res

    monkeypatch.setattr(graph_fit, "lsq_linear", broken_trf)
    x = graph_fit._lsq(A, B, LO, HI)
    assert np.all(np.isfinite(x)) and _cost(x) == pytest.approx(_cost(real(A, B, bounds=(LO, HI), method="bvls").x), abs=1e-12)
