"""Pure measurements on feature tensors and paired points, shared by the variants' own
``feature_measurements`` / hypothesis judges and by :mod:`analysis.diagnostics`.

Nothing here reads runs, records or reports: inputs are tensors (rows are images) or arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


def _mean_offdiag(sim: torch.Tensor) -> float:
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / max(1, n * n - n))


def cosine_summary(a: torch.Tensor, b: torch.Tensor, va: torch.Tensor, vb: torch.Tensor) -> dict:
    """Mean cosine similarity: two views of one image (``a`` with ``va``, ``b`` with ``vb``, row by row),
    same group (a, b separately, the diagonal left out), across groups (every a with every b)."""
    a, b, va, vb = (F.normalize(t, dim=-1) for t in (a, b, va, vb))
    return {"two_views": float(torch.cat([(a * va).sum(-1), (b * vb).sum(-1)]).mean()),
            "same_group": (_mean_offdiag(a @ a.T) + _mean_offdiag(b @ b.T)) / 2,
            "cross_group": float((a @ b.T).mean())}


def effective_rank(x: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of the centred rows (Roy & Vetterli)."""
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||z_i - z_j||^2) over distinct pairs (Wang & Isola); lower = more uniform."""
    d = torch.pdist(F.normalize(z, dim=-1)).pow(2)
    return float(torch.log(torch.exp(-t * d).mean()))


def alignment(z_f: torch.Tensor, z_m: torch.Tensor) -> float:
    """Mean squared distance between every cross-group (female, male) projection pair."""
    z_f, z_m = F.normalize(z_f, dim=-1), F.normalize(z_m, dim=-1)
    return float(torch.cdist(z_f, z_m).pow(2).mean())


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
