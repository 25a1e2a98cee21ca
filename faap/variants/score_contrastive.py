"""Adaptive score-based contrastive loss (the original's train_faap_score_contrastive.py, its v2): images
ranked within the batch by detection score, the bottom pulled toward the top in a projection space."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from faap.config import TrainConfig, bounded
from faap.evidence import Evidence
from faap.heads import ProjectionHead
from faap.losses import score_contrastive
from faap.measures import bootstrap_ci, cluster_bootstrap_ci, interval_text, verdict_below
from faap.variants.base import Finding, Hypothesis, StepState, Variant


@dataclass
class ScoreContrastiveConfig(TrainConfig):
    # The original's defaults where they differ from the shared ones (bounds stay TrainConfig's).
    epochs: int = 30
    """Training epochs (the original: 30)."""
    batch_size: int = 7
    """Images per step (the original: 7)."""
    optimizer: str = "adamw"
    """AdamW over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    eps_cooldown_epochs: int = 16
    """Epochs of the eps fall to eps_final (the original: 16)."""
    temperature: float = bounded(0.1, gt=0)
    """InfoNCE temperature."""
    top_k_percent: float = bounded(0.4, gt=0, le=1)
    """Fraction of the batch, highest scores first, taken as positives."""
    bottom_k_percent: float = bounded(0.4, gt=0, le=1)
    """Fraction of the batch, lowest scores first, taken as anchors."""
    min_samples: int = bounded(2, ge=1)
    """Least positives and anchors; a batch under twice this gets no contrastive term."""
    lambda_contrastive: float = bounded(1.0, ge=0)
    """Weight of the contrastive term in G's loss (after its warm-up)."""
    contrastive_warmup_epochs: int = bounded(3, ge=0)
    """The contrastive weight rises as epoch / warmup from 0 to 1 over these epochs."""
    bidirectional: bool = False
    """Add the pull of positives toward each other (the original's --bidirectional)."""
    anchor_weight: float = bounded(1.0, ge=0)
    """Bidirectional only: weight of the anchor-to-positive term."""
    positive_weight: float = bounded(0.3, ge=0)
    """Bidirectional only: weight of the positive-to-positive term."""
    proj_hidden_dim: int = bounded(512, gt=0)
    """Hidden size of the projection head."""
    proj_output_dim: int = bounded(128, gt=0)
    """Output size of the projection head."""


class BatchNormProjectionHead(ProjectionHead):
    """The shared head with BatchNorm after its first layer (module names as the original's, net.0-3)."""

    def __init__(self, in_dim: int, proj_dim: int, hidden: int):
        super().__init__(in_dim, proj_dim, hidden)
        self.net.insert(1, nn.BatchNorm1d(hidden))


# ---- failure hypotheses, measured on the study's per-epoch records; rules read 95% bootstrap intervals ----
H1_MARGIN, H1_CLEAR = 0.10, 0.25
H2_SHRINK, H2_CLEAR = 0.10, 0.25


def _judge_gender_blind(evidence: Evidence) -> Finding:
    anchors = evidence.trial_epochs("anchor_female_frac").set_index(["run", "epoch"])["value"]
    positives = evidence.trial_epochs("positive_female_frac").set_index(["run", "epoch"])["value"]
    diff = (anchors - positives).dropna()
    if diff.empty:
        return Finding("inconclusive", "no epoch records the anchors' female share (0 records)", {"n": 0})
    runs = diff.index.get_level_values("run")
    d, ci = cluster_bootstrap_ci(np.mean, diff.to_numpy(), runs.to_numpy())
    n, n_runs = len(diff), runs.nunique()
    text = (f"anchors are {anchors.mean():.2f} female, positives {positives.mean():.2f}: the ranking puts "
            f"{interval_text(d, ci, '+.2f')} more women among the anchors (mean of {n} run-epoch records, "
            + ("runs resampled)" if n_runs > 1 else "one run: its epochs resampled, the spread between seeds unmeasured)"))
    verdict = verdict_below(ci, H1_MARGIN, H1_CLEAR)
    return Finding(verdict, text, {"female_share_difference": d, "female_share_difference_ci": ci, "n": n,
                                   "n_runs": n_runs})


def _judge_gap_not_closed(evidence: Evidence) -> Finding:
    gaps = evidence.trial_epochs("score_gap_within_batch").groupby("run")["value"]
    first, last = gaps.first(), gaps.last()
    changes = ((last - first) / first)[gaps.size() >= 2].dropna()
    if changes.empty:
        return Finding("inconclusive", f"within-batch score gap {first.mean():.3f} at the first epoch, no later "
                       "epoch to compare with", {"first_gap": float(first.mean()), "n_runs": 0})
    c, ci = bootstrap_ci(np.mean, changes.to_numpy())
    text = (f"within-batch score gap (positives minus anchors) {first.mean():.3f} -> {last.mean():.3f} from the "
            f"first to the last epoch: relative change {interval_text(c, ci, '+.1%')} (mean over {len(changes)} "
            + ("runs, runs resampled)" if ci else "run: one run gives no interval)"))
    verdict = ("inconclusive" if ci is None else "supported" if ci[0] > -H2_SHRINK
               else "not supported" if ci[1] < -H2_CLEAR else "inconclusive")
    return Finding(verdict, text, {"relative_change": c, "relative_change_ci": ci, "n_runs": len(changes)})


HYPOTHESES = (
    Hypothesis("gender_blind", "The score ranking does not single out women",
               f"on the 95% interval of the anchors' female share minus the positives' (runs resampled, or one run's "
               f"epochs): supported when it lies wholly below {H1_MARGIN}, not supported when wholly above {H1_CLEAR}, "
               "otherwise inconclusive (the premise: 'low-score images naturally include mostly women')",
               _judge_gender_blind),
    Hypothesis("gap_not_closed", "Anchors are not pulled up to the positives",
               f"on the 95% interval of the within-batch score gap's relative change from the first to the last epoch "
               f"(runs resampled; one run gives none: inconclusive): supported when it lies wholly above "
               f"-{H2_SHRINK:.0%} (a shrink of less than {H2_SHRINK:.0%}), not supported when wholly below "
               f"-{H2_CLEAR:.0%}, otherwise inconclusive", _judge_gap_not_closed),
)


class ScoreContrastive(Variant):
    name = "score_contrastive"
    Config = ScoreContrastiveConfig
    reference = "adversarial"
    hypotheses = HYPOTHESES
    whole_batch = True  # the original ran G, DETR and its set loss once over the whole batch
    image_scores = True  # its ranking and Wasserstein use each image's mean matched score

    def __init__(self, cfg: ScoreContrastiveConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = BatchNormProjectionHead(hidden_dim, cfg.proj_output_dim, cfg.proj_hidden_dim)

    def g_parameters(self):
        return list(self.proj_head.parameters())

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        cfg, features = self.cfg, state.out.features
        if len(features) < 2:  # BatchNorm cannot train on one row (the original would stop here)
            return {"contrastive": features.new_zeros(())}
        scores = state.extras["image_scores"]  # with their graph: the ranking detaches them
        loss, split = score_contrastive(self.proj_head(features), scores, cfg.temperature, cfg.top_k_percent,
                                        cfg.bottom_k_percent, cfg.min_samples,
                                        cfg.positive_weight if cfg.bidirectional else None, cfg.anchor_weight)
        if split is not None:
            top, bottom, s = *split, scores.detach()
            state.extras["logs"] = {
                "n_positive": len(top), "n_anchor": len(bottom),
                "score_gap_within_batch": float(s[top].mean() - s[bottom].mean()),
                "positive_female_frac": float((top < state.n_female).float().mean()),
                "anchor_female_frac": float((bottom < state.n_female).float().mean())}
        return {"contrastive": loss}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        warmup = self.cfg.contrastive_warmup_epochs
        ramp = 1.0 if warmup <= 0 or epoch >= warmup else epoch / warmup
        return {**super().weight_dict(epoch), "contrastive": self.cfg.lambda_contrastive * ramp}
