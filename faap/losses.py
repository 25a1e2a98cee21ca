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


# ---- score_contrastive ----
def percentile_split(scores: torch.Tensor, top_percent: float = 0.4, bottom_percent: float = 0.4,
                     min_samples: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the batch's top and bottom by score (positives, anchors): ``max(min_samples, int(n * p))``
    each, or the upper half and the rest when those overlap; the rows in between are left out."""
    n = len(scores)
    order = scores.detach().argsort(descending=True)  # ties: torch's order, as the original
    n_top = max(min_samples, int(n * top_percent))  # int() truncates: 7 * 0.4 -> 2
    n_bottom = max(min_samples, int(n * bottom_percent))
    if n_top + n_bottom > n:  # an odd batch gives its middle row to the anchors
        n_top = n // 2
        n_bottom = n - n_top
    return order[:n_top], order[n - n_bottom:]


def _infonce_toward(z: torch.Tensor, anchors: torch.Tensor, positives: torch.Tensor, temperature: float):
    """``-mean_a[ lse_{p != a}(z_a . z_p / t) - lse_{k != a}(z_a . z_k / t) ]``, k over the whole batch
    (positives, other anchors and the left-out middle rows alike); each anchor's own row is masked."""
    sim = z[anchors] @ z.T / temperature  # A x N
    own = anchors[:, None] == torch.arange(len(z), device=z.device)[None, :]
    sim = sim.masked_fill(own, float("-inf"))
    return -(torch.logsumexp(sim[:, positives], dim=1) - torch.logsumexp(sim, dim=1)).mean()


def score_contrastive(z: torch.Tensor, scores: torch.Tensor, temperature: float = 0.1, top_percent: float = 0.4,
                      bottom_percent: float = 0.4, min_samples: int = 2, positive_weight: float | None = None,
                      anchor_weight: float = 1.0):
    """Adaptive score-based contrastive loss over L2-normalised projections ``z`` (N x D) ranked by ``scores``.

    Anchors (the bottom rows) are pulled toward the positives (the top rows). With ``positive_weight``
    (the original's bidirectional loss): ``anchor_weight * that + positive_weight * L_p2p``, where the
    positives are pulled toward each other (0 below two positives). Returns ``(loss, (top, bottom))``;
    a batch under ``2 * min_samples`` rows gives a constant 0 and no split (no gradient, as the original).
    """
    if len(z) < 2 * min_samples:
        return z.new_zeros(()), None
    top, bottom = percentile_split(scores, top_percent, bottom_percent, min_samples)
    loss = _infonce_toward(z, bottom, top, temperature)
    if positive_weight is None:
        return loss, (top, bottom)
    p2p = _infonce_toward(z, top, top, temperature) if len(top) >= 2 else z.new_zeros(())
    return anchor_weight * loss + positive_weight * p2p, (top, bottom)


# ---- infonce_gender_aware ----
def image_level_scores(probs: torch.Tensor, top_k: int = 10) -> torch.Tensor:
    """B x Q x C real-class probabilities -> B: the mean of each image's ``top_k`` highest query scores
    (a query's score: its highest class probability); all queries when ``top_k`` is 0 or >= Q."""
    best = probs.max(dim=-1).values
    if 0 < top_k < best.size(1):
        best = best.topk(top_k, dim=1).values
    return best.mean(dim=1)


def score_weight_bias(scores_f: torch.Tensor, scores_m: torch.Tensor, sharpness: float = 5.0) -> torch.Tensor:
    """N_f x N_m ``log(w_ij + 1e-8)``, ``w_ij = 0.5 + sigmoid(sharpness * (s_m[j] - s_f[i]))`` in (0.5, 1.5).

    Scores are detached: they choose how hard a pair is pulled, they are not trained through this term.
    """
    diff = scores_m.detach().unsqueeze(0) - scores_f.detach().unsqueeze(1)
    return torch.log(0.5 + torch.sigmoid(diff * sharpness) + 1e-8)


def gender_aware_infonce(z_f: torch.Tensor, z_m: torch.Tensor, scores_f: torch.Tensor, scores_m: torch.Tensor,
                         temperature: float = 0.07, alpha: float = 1.0, sharpness: float = 5.0,
                         weight_f: float = 1.5, weight_m: float = 0.5) -> torch.Tensor:
    """``a_f * L_F->M(score-weighted) + a_m * L_M->F`` over L2-normalised projections.

    F->M: every male is a positive of each female anchor, its logit raised by ``alpha * log w_ij``
    (the weight multiplies exp(sim / t)); the other females are the negatives. M->F is the plain
    cross-gender direction (no weights), taken only with at least 2 males. Fewer than 2 females
    or no male: zero (keeping the graph).
    """
    if len(z_f) < 2 or len(z_m) < 1:
        return (z_f.sum() + z_m.sum()) * 0.0
    pos = z_f @ z_m.T / temperature + alpha * score_weight_bias(scores_f, scores_m, sharpness)
    same = (z_f @ z_f.T / temperature).masked_fill(torch.eye(len(z_f), dtype=torch.bool, device=z_f.device),
                                                   float("-inf"))
    # The weights enter numerator and denominator alike: it is the positives' share that they tilt.
    f2m = -(torch.logsumexp(pos, dim=1) - torch.logsumexp(torch.cat([pos, same], dim=1), dim=1)).mean()
    m2f = _directional_infonce(z_m, z_f, temperature) if len(z_m) >= 2 else z_m.sum() * 0.0
    return weight_f * f2m + weight_m * m2f


# ---- fix10_scf / fix11_conditional: Gaussian score-kernel contrastive, women anchors, men targets ----
def score_kernel_weights(scores_a: torch.Tensor, scores_t: torch.Tensor, scores: torch.Tensor,
                         bandwidth_scale: float = 1.0) -> torch.Tensor:
    """N_a x N_t ``exp(-(s_a - s_t)^2 / (2 sigma^2))``, ``sigma = bandwidth_scale * std(scores)`` (the whole
    batch's unbiased std, detached, at least 1e-6). Gradient flows through ``scores_a``/``scores_t`` unless
    the caller detaches them (fix10 does not, fix11_conditional does)."""
    sigma = scores.detach().std().clamp(min=1e-6) * bandwidth_scale
    return torch.exp(-(scores_a.unsqueeze(1) - scores_t.unsqueeze(0)) ** 2 / (2 * sigma**2))


def _kernel_infonce(z_a: torch.Tensor, z_t_pos: torch.Tensor, z_t_all: torch.Tensor, weights: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``-mean_a[ sum_t w_at sim(a, t) / sum_t w_at - lse_{k != a} sim(a, k) ]``, k over anchors then targets;
    the numerator takes ``z_t_pos``, the denominator ``z_t_all`` (the same rows, detached or not)."""
    weighted = (z_a @ z_t_pos.T / temperature * weights).sum(1) / weights.sum(1).clamp(min=1e-6)
    sim = z_a @ torch.cat([z_a, z_t_all]).T / temperature
    own = torch.eye(len(z_a), sim.size(1), dtype=torch.bool, device=sim.device)
    return -(weighted - torch.logsumexp(sim.masked_fill(own, float("-inf")), dim=1)).mean()


def scf_contrastive(z: torch.Tensor, scores: torch.Tensor, n_female: int, temperature: float = 0.1,
                    bandwidth_scale: float = 1.0) -> torch.Tensor:
    """fix10's score-weighted contrastive loss over L2-normalised projections ``z`` (female rows first):
    each woman's similarities to the men, weighted by the score kernel, against all other rows. The men's
    projections are detached everywhere; the kernel weights keep the scores' graph. A batch without both
    groups gives 0 (no gradient, as the original)."""
    if n_female < 1 or len(z) - n_female < 1:
        return z.sum() * 0.0
    z_t = z[n_female:].detach()
    weights = score_kernel_weights(scores[:n_female], scores[n_female:], scores, bandwidth_scale)
    return _kernel_infonce(z[:n_female], z_t, z_t, weights, temperature)


def conditional_contrastive(z: torch.Tensor, scores: torch.Tensor, n_female: int, temperature: float = 0.1,
                            bandwidth_scale: float = 1.0) -> torch.Tensor:
    """fix11_conditional's variant of :func:`scf_contrastive`: kernel weights from detached scores, the men
    detached in the numerator only (the denominator's similarities to them keep their graph)."""
    if n_female < 1 or len(z) - n_female < 1:
        return z.sum() * 0.0
    s = scores.detach()
    weights = score_kernel_weights(s[:n_female], s[n_female:], s, bandwidth_scale)
    return _kernel_infonce(z[:n_female], z[n_female:].detach(), z[n_female:], weights, temperature)


# ---- fix11_contrastive ----
def softmax_weighted_contrastive(z_f: torch.Tensor, z_m: torch.Tensor, scores_m: torch.Tensor,
                                 temperature: float = 0.1, weight_temperature: float = 0.1) -> torch.Tensor:
    """fix11_contrastive's loss: ``-mean_f[ sum_m w_m sim(f, m) - lse(sim(f, all men), sim(f, other women)) ]``,
    ``w = softmax(scores_m / weight_temperature)`` (detached; the original hard-coded 0.1). Nothing else is
    detached: the men are pulled too (the L2 anchor is what holds them). Without both groups: 0."""
    if len(z_f) < 1 or len(z_m) < 1:
        return (z_f.sum() + z_m.sum()) * 0.0
    weights = torch.softmax(scores_m.detach() / weight_temperature, dim=0)
    sim_fm = z_f @ z_m.T / temperature
    own = torch.eye(len(z_f), dtype=torch.bool, device=z_f.device)
    sim_ff = (z_f @ z_f.T / temperature).masked_fill(own, float("-inf"))
    return -((sim_fm * weights.unsqueeze(0)).sum(1) - torch.logsumexp(torch.cat([sim_fm, sim_ff], 1), 1)).mean()
