"""fix11_contrastive (the original's train_faap_fix11_contrastive_gpu_20260410.py; ``gamma: 0`` is its copy
train_faap_fix11_contrastive_gpu_ablation_no_l2_20260415.py): women anchors, men positives weighted by
softmax(score / 0.1), other women negatives, nothing detached; per-group detection terms over the last
decoder layer only; and ``gamma`` x an L2 (MSE) between the men's perturbed and clean projections (the
'nail' that holds the men while the contrastive term pulls both ways). Batches without both groups are
skipped. G runs once over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from faap.config import TrainConfig, bounded
from faap.losses import softmax_weighted_contrastive
from faap.variants.base import StepState
from faap.variants.fix10_scf import batch_scores
from faap.variants.fix11_conditional import Fix11


@dataclass
class Fix11ContrastiveConfig(TrainConfig):
    # The original's defaults where they differ from the shared ones (bounds stay TrainConfig's).
    aux_loss: bool = False
    """The original's detection terms took the last decoder layer only (no auxiliary outputs)."""
    epochs: int = 15
    """Training epochs (the original: 15)."""
    batch_size: int = 5
    """Images per step (the original: 5)."""
    optimizer: str = "adamw"
    """AdamW (weight decay 0.01) over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    lr_g: float = 5e-5
    """Learning rate of G and the head (the original: 5e-5)."""
    lr_schedule: str = "cosine"
    """The original's CosineAnnealingLR over the epochs down to 0.1 x lr_g (no EMA)."""
    eps_warmup_epochs: int = 5
    """Epochs of the eps ramp (the original: 5; its schedule equals the suite's)."""
    eps_hold_epochs: int = 4
    """Epochs at the peak budget (the original: 4)."""
    eps_cooldown_epochs: int = 6
    """Epochs of the fall to eps_final (the original: 6)."""
    lambda_wass: float = 0.0
    """No Wasserstein term."""
    amp: str = "bf16"
    """bf16 autocast on CUDA, as the original (no effect on CPU)."""
    lambda_con: float = bounded(1.0, ge=0)
    """Weight of the contrastive term (no warm-up)."""
    beta_m: float = bounded(0.5, ge=0)
    """Weight of the men's detection term (fixed); the women's follows beta_start -> beta_final."""
    gamma: float = bounded(0.5, ge=0)
    """Weight of the men's L2 anchor (0: the no_l2 ablation script, and no clean forward)."""
    temperature: float = bounded(0.1, gt=0)
    """Contrastive temperature."""
    weight_temperature: float = bounded(0.1, gt=0)
    """Temperature of the softmax over the men's scores that weights the positives (hard-coded 0.1)."""
    proj_dim: int = bounded(128, gt=0)
    """Output size of the projection head (hidden size: the detector's)."""
    proj_dropout: float = bounded(0.1, ge=0, le=1)
    """Dropout inside the projection head (also active in its no-grad pass over the clean features)."""


class Fix11Contrastive(Fix11):
    name = "fix11_contrastive"
    Config = Fix11ContrastiveConfig
    label = "fix11 contrastive (+ L2 anchor)"

    @property
    def needs_clean_outputs(self) -> bool:
        return self.cfg.gamma > 0  # the no_l2 script made no clean forward (nor the head's dropout draws)

    def skips(self, n_female: int, n: int) -> bool:
        return n_female < 1 or n - n_female < 1  # the original: `continue` without both groups

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        cfg, n_f = self.cfg, state.n_female
        z_clean = None
        if state.clean is not None:  # first, as the original (the head's dropout draws in its order)
            with torch.no_grad():
                z_clean = self.proj_head(state.clean.features)
        z = self.proj_head(state.out.features)
        scores = batch_scores(state, cfg.score_top_k)
        return {"contrastive": softmax_weighted_contrastive(z[:n_f], z[n_f:], scores[n_f:], cfg.temperature,
                                                            cfg.weight_temperature),
                "l2_anchor": z.sum() * 0.0 if z_clean is None else F.mse_loss(z[n_f:], z_clean[n_f:])}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        return {**super().weight_dict(epoch), "det_m": cfg.beta_m,  # det_f: beta_start -> beta_final
                "contrastive": cfg.lambda_con, "l2_anchor": cfg.gamma}
