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
