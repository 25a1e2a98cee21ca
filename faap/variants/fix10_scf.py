"""fix10_scf (the original's train_faap_simclr_infonce_fix10gpu_scf_20260324.py): a Gaussian score-kernel
contrastive loss with women as anchors and men as detached targets, plus a stability term holding the men's
pooled decoder features at their clean values; no Wasserstein term. G runs once over the whole batch.

Not ported: the original's ``--use_hungarian_score`` (off by default; scores are the image-level top-k
scores, :data:`TrainConfig.score_top_k`) and ``torch.compile`` (off by default there too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faap.config import TrainConfig, bounded
from faap.evidence import Evidence
from faap.heads import ProjectionHead
from faap.losses import image_level_scores, pool_queries, scf_contrastive
from faap.measures import bootstrap_ci, interval_text, verdict_below
from faap.variants.base import Finding, Hypothesis, StepState, Variant


@dataclass
class ScoreKernelConfig(TrainConfig):
    """The settings fix10_scf and fix11_conditional share (the two originals' defaults are the same); each
    variant's config adds its own. The defaults differ from the shared ones where the originals' do."""

    batch_size: int = 5
    """Images per step (the original: 5)."""
    optimizer: str = "adamw"
    """AdamW (weight decay 0.01) over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    lr_g: float = 5e-5
    """Learning rate of G and the head (the original: 5e-5)."""
    lr_schedule: str = "warmup_cosine"
    """The original's LambdaLR: (k+1)/3 in warm-up epoch k, then a cosine down to 0.1 x lr_g, per epoch."""
    lr_warmup_epochs: int = 3
    """Epochs of the learning-rate warm-up."""
    ema_decay: float = 0.999
    """EMA of G and the head, the weights evaluated (the original saved them as its best model)."""
    eps_warmup_epochs: int = 9
    """The original's ``--epsilon_warmup_epochs 8`` (its ramp reaches the peak at epoch 8 and its cool-down
    starts one epoch later than the suite's schedule with 8): the same budgets every epoch."""
    lambda_wass: float = 0.0
    """No Wasserstein term (removed in fix10)."""
    sampler: str = "natural"
    """The original's ``balance_genders=False``: the groups at their natural ratio."""
    amp: str = "bf16"
    """bf16 autocast on CUDA, as the original (no effect on CPU)."""
    lambda_con: float = bounded(1.0, ge=0)
    """Weight of the contrastive term (after its warm-up)."""
    bandwidth_scale: float = bounded(1.0, gt=0)
    """Kernel width sigma = bandwidth_scale x std(batch scores)."""
    temperature: float = bounded(0.1, gt=0)
    """Contrastive temperature."""
    contrastive_warmup_epochs: int = bounded(3, ge=0)
    """The contrastive weight rises as epoch / warmup from 0 to 1 over these epochs."""
    proj_dim: int = bounded(128, gt=0)
    """Output size of the projection head (hidden size: the detector's)."""
    proj_dropout: float = bounded(0.1, ge=0, le=1)
    """Dropout inside the projection head."""


@dataclass
class Fix10ScfConfig(ScoreKernelConfig):
    lambda_stab: float = bounded(0.5, ge=0)
    """Weight of the men's feature stability term (MSE of pooled features, perturbed vs clean)."""


class DropoutProjectionHead(ProjectionHead):
    """fix10/fix11's head: mean over queries -> Linear D->D, ReLU, Dropout -> Linear D->proj_dim -> L2
    normalise (module names as the original's, net.0-3)."""

    def __init__(self, in_dim: int, proj_dim: int, dropout: float):
        super().__init__(in_dim, proj_dim, hidden=in_dim)
        self.net.insert(2, nn.Dropout(p=dropout))


def contrastive_ramp(epoch: int, warmup: int) -> float:
    """fix10/fix11_conditional's contrastive warm-up: epoch / warmup, 1 from the warm-up's end."""
    return 1.0 if warmup <= 0 or epoch >= warmup else epoch / warmup


def batch_scores(state: StepState, top_k: int) -> torch.Tensor:
    """Each image's score (mean of its ``top_k`` highest query scores) on the perturbed batch, with its graph."""
    return image_level_scores(state.extras["class_probs"](state.out.logits), top_k)


# ---- failure hypotheses from the originals' notes; rules read 95% bootstrap intervals ----
def judge_gap_below_clean(evidence: Evidence) -> Finding:
    """The originals' success criterion ('AP Gap < 0.103, baseline 0.106'): the best trial's test AP gap
    below the clean detector's."""
    d = evidence.difference("test", evidence.best.name, "clean", "AP_gap")
    verdict = verdict_below(d.ci, 0.0)
    text = (f"test AP gap of {evidence.best.name} minus the clean detector's: {interval_text(d.value, d.ci)} "
            f"(seed runs {d.runs[0]} and {d.runs[1]}); this comparison could see a change of about "
            f"{d.half_width:.3f} (the interval's half-width)")
    return Finding(verdict, text, {"difference": d.value, "ci": d.ci, "half_width": d.half_width, "p": d.p},
                   where=f"{evidence.best.name}'s seeds on test, images and seeds resampled")


GAP_BELOW_CLEAN = Hypothesis(
    "gap_below_clean", "The method narrows the AP gap below the clean detector's ('AP Gap < 0.103, baseline 0.106')",
    "on the 95% interval of the best trial's test AP gap minus the clean detector's: supported when it lies wholly "
    "below 0, not supported when wholly at or above 0, otherwise inconclusive", judge_gap_below_clean)


def _judge_score_gap_closes(evidence: Evidence) -> Finding:
    gaps = evidence.trial_epochs("train_score_gap").groupby("run")["value"]
    first, last, size = gaps.first().abs(), gaps.last().abs(), gaps.size()
    changes = ((last - first) / first)[size >= 2].replace([np.inf, -np.inf], np.nan).dropna()
    if changes.empty:
        return Finding("inconclusive", "no run records the training score gap at two epochs or more", {"n_runs": 0})
    c, ci = bootstrap_ci(np.mean, changes.to_numpy())
    verdict = verdict_below(ci, 0.0)
    text = (f"|training score gap| (men minus women, image-level top-k scores) {first.mean():.4f} -> "
            f"{last.mean():.4f} from the first to the last epoch: relative change {interval_text(c, ci, '+.1%')} "
            f"(mean over {len(changes)} " + ("runs, runs resampled)" if ci else "run: one run gives no interval)"))
    return Finding(verdict, text, {"relative_change": c, "relative_change_ci": ci, "n_runs": len(changes)})


HYPOTHESES = (
    Hypothesis("score_gap_closes", "Pulling women's features toward men's closes the training score gap "
               "('Female feature가 Male feature 분포를 닮아라')",
               "on the 95% interval of the relative change of |train_score_gap| from the first to the last epoch "
               "(runs resampled; one run gives none: inconclusive): supported when it lies wholly below 0, not "
               "supported when wholly at or above 0, otherwise inconclusive", _judge_score_gap_closes),
    GAP_BELOW_CLEAN,
)


class Fix10Scf(Variant):
    name = "fix10_scf"
    Config = Fix10ScfConfig
    label = "fix10 (score kernel + male stability)"
    reference = "adversarial"
    hypotheses = HYPOTHESES
    whole_batch = True  # the original ran G, DETR and its set loss once over the whole batch
    needs_clean_outputs = True  # the stability term compares with the clean features

    def __init__(self, cfg: Fix10ScfConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = DropoutProjectionHead(hidden_dim, cfg.proj_dim, cfg.proj_dropout)

    def g_parameters(self):
        return list(self.proj_head.parameters())

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        cfg, features, n_f = self.cfg, state.out.features, state.n_female
        contrastive = scf_contrastive(self.proj_head(features), batch_scores(state, cfg.score_top_k), n_f,
                                      cfg.temperature, cfg.bandwidth_scale)
        pert, clean = pool_queries(features)[n_f:], pool_queries(state.clean.features)[n_f:]
        stability = F.mse_loss(pert, clean.detach()) if len(pert) else features.sum() * 0.0
        return {"contrastive": contrastive, "stability": stability}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        return {**super().weight_dict(epoch), "contrastive": cfg.lambda_con * contrastive_ramp(epoch,
                cfg.contrastive_warmup_epochs), "stability": cfg.lambda_stab}
