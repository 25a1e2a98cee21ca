"""Pure measurements on feature tensors and paired points, shared by the variants' own
``feature_measurements`` / hypothesis judges and by :mod:`analysis.diagnostics`.

Nothing here reads runs, records or reports: inputs are tensors (rows are images) or arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


def pair_mean(sim: np.ndarray, i: np.ndarray, j: np.ndarray | None = None) -> float:
    """Mean of ``sim[i[a], j[b]]`` over every pair (a, b); with ``j`` None, pairs within one sample
    (``sim`` square), leaving out each image paired with itself and, trap, with its own bootstrap copy
    (``i[a] == i[b]``): counted, a resample's duplicates would add self-similarities. NaN with no pair."""
    if j is not None:
        return float(sim[np.ix_(i, j)].mean())
    keep = i[:, None] != i[None, :]
    return float(sim[np.ix_(i, i)][keep].mean()) if keep.any() else float("nan")


@dataclass(frozen=True)
class CosinePairs:
    """Cosine similarities of two groups' images (a, b), computed once; :meth:`summary` reads any
    resample of their images (index arrays) without recomputing them."""

    views_a: np.ndarray
    """Per image of a: its similarity with its other view."""
    views_b: np.ndarray
    aa: np.ndarray
    bb: np.ndarray
    ab: np.ndarray

    def summary(self, i: np.ndarray | None = None, j: np.ndarray | None = None) -> dict:
        """:func:`cosine_summary` of the images ``i`` of a and ``j`` of b (default: all)."""
        i = np.arange(len(self.views_a)) if i is None else i
        j = np.arange(len(self.views_b)) if j is None else j
        return {"two_views": float(np.concatenate([self.views_a[i], self.views_b[j]]).mean()),
                "same_group": (pair_mean(self.aa, i) + pair_mean(self.bb, j)) / 2,
                "cross_group": pair_mean(self.ab, i, j)}


def cosine_pairs(a, b, va, vb) -> CosinePairs:
    """The similarities behind :func:`cosine_summary` (rows are images; tensors or arrays)."""
    a, b, va, vb = (F.normalize(torch.as_tensor(t, dtype=torch.float64), dim=-1) for t in (a, b, va, vb))
    return CosinePairs((a * va).sum(-1).numpy(), (b * vb).sum(-1).numpy(), (a @ a.T).numpy(), (b @ b.T).numpy(),
                       (a @ b.T).numpy())


def cosine_summary(a, b, va, vb) -> dict:
    """Mean cosine similarity: two views of one image (``a`` with ``va``, ``b`` with ``vb``, row by row),
    same group (a, b separately, the diagonal left out), across groups (every a with every b)."""
    return cosine_pairs(a, b, va, vb).summary()


def effective_rank(x) -> float:
    """exp of the entropy of the normalised singular values of the centred rows (Roy & Vetterli)."""
    x = torch.as_tensor(x)
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def gaussian_pairs(z, t: float = 2.0) -> np.ndarray:
    """exp(-t ||z_i - z_j||^2) of every pair of L2-normalised rows (the terms of :func:`uniformity`)."""
    z = F.normalize(torch.as_tensor(z, dtype=torch.float64), dim=-1)
    return torch.exp(-t * torch.cdist(z, z).pow(2)).numpy()


def uniformity(z, t: float = 2.0, i: np.ndarray | None = None) -> float:
    """log E exp(-t ||z_i - z_j||^2) over distinct pairs (Wang & Isola); lower = more uniform.
    ``i``: a resample of the rows (default: all)."""
    return float(np.log(pair_mean(gaussian_pairs(z, t), np.arange(len(z)) if i is None else i)))


def rbf_kernels(x, y, sigmas) -> np.ndarray:
    """sum_s exp(-|x_a - y_b|^2 / (2 s^2)) for every pair of rows: the kernel of
    ``faap.losses.multi_kernel_mmd``, as a matrix, so that resamples of the rows index it."""
    d = torch.cdist(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)).pow(2)
    return sum(torch.exp(-d / (2 * s**2)) for s in sigmas).numpy()


def alignment(z_f, z_m) -> float:
    """Mean squared distance between every cross-group (female, male) projection pair."""
    z_f, z_m = (F.normalize(torch.as_tensor(z), dim=-1) for z in (z_f, z_m))
    return float(torch.cdist(z_f, z_m).pow(2).mean())


def _percentile_interval(draws, level: float, centre: float | None = None) -> tuple[float, float] | None:
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not draws.size:
        return None
    if centre is not None:
        draws = draws - np.median(draws) + centre
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_ci(statistic: Callable[..., float], *samples, replicates: int = 1000, seed: int = 0,
                 level: float = 0.95, centred: bool = False) -> tuple[float, tuple[float, float] | None]:
    """``statistic(*samples)`` and its percentile interval over ``replicates`` resamples: ``(value, (lo, hi))``.

    Each sample (an array whose rows are units: one group's images, or runs) is resampled on its own, rows
    with replacement, so a statistic comparing two groups keeps each group's size. Pass ``np.arange(n)`` as
    a sample to be handed index draws (for pair statistics, see :func:`pair_mean`); the same ``seed`` draws
    the same resamples, so two statistics of the same samples are paired. Replicates whose statistic is not
    finite are dropped. No interval (None) when a sample has fewer than 2 rows or no replicate is finite.

    ``centred``: the draws are shifted so that their median is the value, for statistics that resampling
    itself biases. Trap: a duplicated image adds no dimension, so a resample's effective rank is lower than
    the sample's and a plain percentile interval of a rank ratio can miss the measured value altogether."""
    value = float(statistic(*samples))
    if min(len(s) for s in samples) < 2:
        return value, None
    rng = np.random.default_rng(seed)
    draws = [statistic(*[s[rng.integers(0, len(s), len(s))] for s in samples]) for _ in range(replicates)]
    return value, _percentile_interval(draws, level, value if centred else None)


def interval_text(value: float, ci: tuple[float, float] | None, spec: str = "+.3f") -> str:
    """'value, 95% CI [lo, hi]' (the level :func:`bootstrap_ci` uses by default), or 'value (no interval)'."""
    if ci is None:
        return f"{value:{spec}} (no interval)"
    return f"{value:{spec}}, 95% CI [{ci[0]:{spec}}, {ci[1]:{spec}}]"


def verdict_below(ci: tuple[float, float] | None, supported_under: float,
                  not_supported_from: float | None = None) -> str:
    """The three-outcome rule of a hypothesis that predicts a small value: 'supported' when the interval lies
    wholly below ``supported_under``, 'not supported' when wholly at or above ``not_supported_from`` (default:
    the same bound), otherwise, or without an interval, 'inconclusive'."""
    clear = supported_under if not_supported_from is None else not_supported_from
    if ci is None:
        return "inconclusive"
    return "supported" if ci[1] < supported_under else "not supported" if ci[0] >= clear else "inconclusive"


def cluster_bootstrap_ci(statistic: Callable[[np.ndarray], float], values, clusters, replicates: int = 1000,
                         seed: int = 0, level: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """``statistic(values)`` with a cluster bootstrap's interval: clusters (runs) resampled, each drawn one
    with all its members (epoch records of one run are not independent), as :func:`rank_correlation` does.
    One cluster: its members resampled instead (the spread between runs is then unmeasured; say so).
    Returns as :func:`bootstrap_ci` (no interval under 2 values)."""
    values, clusters = np.asarray(values, dtype=float), np.asarray(clusters)
    members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    if len(members) == 1:
        return bootstrap_ci(statistic, values, replicates=replicates, seed=seed, level=level)
    rng, k = np.random.default_rng(seed), len(members)
    draws = [statistic(values[np.concatenate([members[c] for c in rng.integers(0, k, k)])]) for _ in range(replicates)]
    return float(statistic(values)), _percentile_interval(draws, level)


MIN_CORRELATION_RUNS = 4
"""Fewer runs than this give no interval: resampling 2-3 runs cannot say how the correlation varies."""


def rank_correlation(points: np.ndarray, replicates: int = 2000, seed: int = 0) -> dict:
    """Spearman correlation of the first two columns with a 95% bootstrap interval:
    ``{n, runs, rho, ci}`` (no ``rho`` below 6 points or :data:`MIN_CORRELATION_RUNS` runs).

    With a third column (run codes, e.g. ``Evidence.loss_vs_gap_points``) the bootstrap resamples
    runs, each with all its points (a cluster bootstrap): a run's epochs are not independent points.
    Without one, points."""
    from scipy.stats import spearmanr

    clusters = points[:, 2] if points.shape[1] > 2 else np.arange(len(points))
    members = [np.flatnonzero(clusters == c) for c in np.unique(clusters)]
    n, runs = len(points), len(members)
    if n < 6 or runs < MIN_CORRELATION_RUNS:
        return {"n": n, "runs": runs}
    rho = float(spearmanr(points[:, 0], points[:, 1]).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(replicates):
        idx = np.concatenate([members[i] for i in rng.integers(0, runs, runs)])
        if np.ptp(points[idx, 0]) > 0 and np.ptp(points[idx, 1]) > 0:
            boots.append(spearmanr(points[idx, 0], points[idx, 1]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"n": n, "runs": runs, "rho": rho, "ci": (float(lo), float(hi))}
