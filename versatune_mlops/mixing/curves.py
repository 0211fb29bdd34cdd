"""The ``curve_fit`` reference: each domain's ℓ_ref is the asymptote of its own held-out loss curve.

ℓ(t) = ℓ∞ + b·t^(−c) is fitted online to the evaluations so far (the paper's figure draws ℓ_ref as
that asymptote; ADO fits per-domain power laws the same way). Pure numpy, like :mod:`.weights`, so it
is used and tested without torch (a test enforces the imports).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .weights import ArrayLike


# Exponents c of the power law tried by fit_power_law: from nearly flat to steep.
_POWER_LAW_EXPONENTS = np.geomspace(0.02, 5.0, 120)


def fit_power_law(t: ArrayLike, loss: ArrayLike) -> Optional[tuple[float, float, float]]:
    """Least-squares fit of l(t) = l_inf + b * t^(-c) with b > 0 (a falling curve), t > 0.

    For a fixed c the model is linear in (l_inf, b), so each c of a fixed grid is solved in closed
    form and the c with the smallest squared error wins: deterministic, no optimiser to diverge.
    Returns (l_inf, b, c), or None when no c gives a falling curve (b <= 0) or there are fewer than
    3 finite points (3 parameters).
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(loss, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0)
    t, y = t[keep], y[keep]
    if t.size < 3 or np.unique(t).size < 3:
        return None
    best: Optional[tuple[float, float, float, float]] = None
    for c in _POWER_LAW_EXPONENTS:
        design = np.stack([np.ones_like(t), t ** -c], axis=1)
        (l_inf, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        if not b > 0:
            continue
        error = float(np.sum((design @ np.array([l_inf, b]) - y) ** 2))
        if best is None or error < best[0]:
            best = (error, float(l_inf), float(b), float(c))
    return None if best is None else best[1:]


def curve_fit_reference(steps: ArrayLike, losses: ArrayLike, fallback: float, min_points: int = 4) -> float:
    """One domain's l_ref: the asymptote l_inf of its held-out loss curve (the paper's figure draws
    l_ref so), fitted online to the evaluations so far. ``steps`` are training steps (0 = the base
    model); the fit uses t = step + 1 so the base point sits at t = 1.

    - fewer than ``min_points`` evaluations: ``fallback`` (the caller's initial_fraction reference).
      The default 4 is one more point than the law has parameters: three points are interpolated
      exactly, and the asymptote of an exact fit to a steep early drop swings between 0 and the
      last loss from one point to the next (measured on the tiny preset);
    - no falling fit (the loss has not come down): the lowest loss seen, so gamma measures only how far
      the domain is above its own best;
    - otherwise l_inf, clipped to [lowest - (first - lowest), lowest] and to >= 0: an asymptote above a
      seen loss would call a reachable loss unreachable, and one that promises more than the gain seen
      so far is an extrapolation the few points cannot support.
    """
    steps = np.asarray(steps, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    finite = y[np.isfinite(y)]
    if finite.size < min_points:
        return float(fallback)
    lowest = float(finite.min())
    fit = fit_power_law(steps + 1.0, y)
    if fit is None:
        return lowest
    floor = max(lowest - (float(finite[0]) - lowest), 0.0)
    return float(min(max(fit[0], floor), lowest))
