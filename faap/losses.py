"""The loss functions shared by the variants (formulas in docs: domain.md)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _directional_infonce(anchors: torch.Tensor, others: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-mean_i[ lse_j(a_i . o_j / t) - lse(over all o_j and all a_k, k != i, of a_i . z / t) ]``.

    Every cross-group sample is a positive of every anchor ("all positives counted together");
    the anchor's own similarity is masked out of the denominator.
    """
    pos = anchors @ others.T / temperature  # N_a x N_o
    same = anchors @ anchors.T / temperature  # N_a x N_a
    same = same.masked_fill(torch.eye(len(anchors), dtype=torch.bool, device=anchors.device), float("-inf"))
    numerator = torch.logsumexp(pos, dim=1)
    denominator = torch.logsumexp(torch.cat([pos, same], dim=1), dim=1)
    return -(numerator - denominator).mean()


def cross_gender_infonce(z_f: torch.Tensor, z_m: torch.Tensor, temperature: float = 0.07,
                         weight_f: float = 1.5, weight_m: float = 0.5) -> torch.Tensor:
    """``a_f * L_F->M + a_m * L_M->F`` over L2-normalised projections (N x D each).

    A batch without both groups contributes nothing (a zero that keeps the graph).
    """
    if len(z_f) == 0 or len(z_m) == 0:
        return (z_f.sum() + z_m.sum()) * 0.0
    return weight_f * _directional_infonce(z_f, z_m, temperature) + weight_m * _directional_infonce(z_m, z_f, temperature)


def resample_sorted(values: torch.Tensor, k: int) -> torch.Tensor:
    """Linearly interpolate a sorted 1-D vector at ``k`` evenly spaced quantile positions."""
    n = len(values)
    if n == k:
        return values
    if n == 1:
        return values.expand(k)
    pos = torch.linspace(0, n - 1, k, device=values.device, dtype=values.dtype)
    lo = pos.floor().long().clamp(max=n - 2)
    frac = pos - lo.to(values.dtype)
    return values[lo] * (1 - frac) + values[lo + 1] * frac


def one_way_wasserstein(female_scores: torch.Tensor, male_scores: torch.Tensor) -> torch.Tensor:
    """``mean(relu(sort(s_m) - sort(s_f)))`` after resampling both to K = max(n_f, n_m) points.

    Male scores are detached: the loss only raises female scores toward male ones.
    """
    if len(female_scores) == 0 or len(male_scores) == 0:
        return female_scores.sum() * 0.0
    k = max(len(female_scores), len(male_scores))
    s_f = resample_sorted(female_scores.sort().values, k)
    s_m = resample_sorted(male_scores.detach().sort().values, k)
    return F.relu(s_m - s_f).mean()


def adversarial_fairness(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.2) -> torch.Tensor:
    """``-(CE(logits, labels) + alpha * H(softmax(logits)))``, both batch means.

    Minimising it makes the discriminator wrong and unsure about the group.
    """
    if len(logits) == 0:
        return logits.sum() * 0.0
    log_p = logits.log_softmax(-1)
    entropy = -(log_p.exp() * log_p).sum(-1).mean()
    return -(F.cross_entropy(logits, labels) + alpha * entropy)


# ---- mmd ----
MMD_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Bandwidths of the original's multi-kernel RBF MMD (train_faap_mmd_1st.py, ``_mmd_rbf``)."""


def pool_queries(features: torch.Tensor) -> torch.Tensor:
    """B x Q x D decoder features -> B x D (mean over queries); B x D passes through."""
    return features.mean(1) if features.dim() == 3 else features


def multi_kernel_mmd(x: torch.Tensor, y: torch.Tensor, sigmas=MMD_SIGMAS) -> torch.Tensor:
    """``sum_s [mean k_s(x, x') + mean k_s(y, y') - 2 mean k_s(x, y)]``, ``k_s = exp(-|a - b|^2 / (2 s^2))``.

    Rows of ``x`` and ``y`` are samples (pool B x Q x D features first). The biased estimator, as the
    original: the kernel matrices' diagonals (k = 1) are in the means, so one sample per group still
    gives a finite value. A side without rows contributes nothing (a zero that keeps the graph).
    """
    if len(x) == 0 or len(y) == 0:
        return (x.sum() + y.sum()) * 0.0
    # cdist, then squared, as the original: its backward is 0 at a zero distance (the diagonal),
    # where the expanded |a|^2 + |b|^2 - 2ab form can go slightly negative.
    d_xx, d_yy, d_xy = (torch.cdist(a, b, p=2).pow(2) for a, b in ((x, x), (y, y), (x, y)))
    total = x.new_zeros(())
    for sigma in sigmas:
        gamma = 1.0 / (2 * sigma**2)
        total = total + (-gamma * d_xx).exp().mean() + (-gamma * d_yy).exp().mean() - 2 * (-gamma * d_xy).exp().mean()
    return total
