"""Across-seed statistics (as rliable reports them): mean with a t interval, IQM, probability of improvement."""

from __future__ import annotations

import numpy as np
from scipy import stats


def seed_stats(values, level: float = 0.95) -> dict:
    """Mean, its t-interval (NaN for one seed), standard deviation and interquartile mean."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    out = {"n": n, "mean": float(v.mean()) if n else float("nan"), "std": float(v.std(ddof=1)) if n > 1 else float("nan"),
           "iqm": float(stats.trim_mean(v, 0.25)) if n else float("nan"), "ci": (float("nan"), float("nan"))}
    if n > 1:
        half = stats.t.ppf(0.5 + level / 2, n - 1) * out["std"] / np.sqrt(n)
        out["ci"] = (out["mean"] - half, out["mean"] + half)
    return out


def probability_of_improvement(a, b, lower_is_better: bool = True) -> float:
    """P(a run of A beats a run of B): the Mann-Whitney statistic over all seed pairs (ties count 1/2)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return float("nan")
    diff = (b[None, :] - a[:, None]) if lower_is_better else (a[:, None] - b[None, :])
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())
