"""Cross-gender InfoNCE: pull female and male projections together (the variant under study)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faap.augment import STRENGTHS, color_augment
from faap.config import TrainConfig, bounded
from faap.heads import ProjectionHead
from faap.losses import cross_gender_infonce
from faap.variants.base import StepState, Variant


@dataclass
class InfoNCEConfig(TrainConfig):
    # A changed default keeps the bounds TrainConfig declares for the field.
    optimizer: str = "adamw"
    """AdamW over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    temperature: float = bounded(0.07, gt=0)
    """InfoNCE temperature tau."""
    asymmetric_f: float = bounded(1.5, ge=0)
    """Weight a_f of the female->male direction."""
    asymmetric_m: float = bounded(0.5, ge=0)
    """Weight a_m of the male->female direction."""
    lambda_infonce: float = bounded(1.0, ge=0)
    """Weight of the InfoNCE term in G's loss."""
    aug_strength: str = bounded("medium", choices=tuple(STRENGTHS))
    """Colour augmentation of perturbed images: none, weak, medium, strong."""
    proj_dim: int = bounded(128, gt=0)
    """Output size of the projection head."""
    proj_hidden: int = bounded(256, gt=0)
    """Hidden size of the projection head."""
    skip_incomplete_batches: bool = True
    """Skip a step whose batch lacks a group (no G step, as the original); False takes a detection-only step."""


class InfoNCE(Variant):
    name = "infonce"
    Config = InfoNCEConfig
    original_checkpoint_key = "proj_head"

    def __init__(self, cfg: InfoNCEConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = ProjectionHead(hidden_dim, cfg.proj_dim, cfg.proj_hidden)

    def g_parameters(self):
        return list(self.proj_head.parameters())

    def skips(self, n_female: int, n: int) -> bool:
        return self.cfg.skip_incomplete_batches and not 0 < n_female < n

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return color_augment(x, self.cfg.aug_strength)

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        z = self.proj_head(state.out.features)
        cfg = self.cfg
        return {"infonce": cross_gender_infonce(z[state.female], z[state.male], cfg.temperature,
                                                cfg.asymmetric_f, cfg.asymmetric_m)}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        return {**super().weight_dict(epoch), "infonce": self.cfg.lambda_infonce}
