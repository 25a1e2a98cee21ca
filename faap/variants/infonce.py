"""Cross-gender InfoNCE: pull female and male projections together (the variant under study)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faap.augment import STRENGTHS, color_augment
from faap.config import ConfigError, TrainConfig
from faap.heads import ProjectionHead
from faap.losses import cross_gender_infonce
from faap.variants.base import StepState, Variant


@dataclass
class InfoNCEConfig(TrainConfig):
    variant_name = "infonce"
    optimizer: str = "adamw"
    """AdamW over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    temperature: float = 0.07
    """InfoNCE temperature tau."""
    asymmetric_f: float = 1.5
    """Weight a_f of the female->male direction."""
    asymmetric_m: float = 0.5
    """Weight a_m of the male->female direction."""
    lambda_infonce: float = 1.0
    """Weight of the InfoNCE term in G's loss."""
    aug_strength: str = "medium"
    """Colour augmentation of perturbed images: none, weak, medium, strong."""
    proj_dim: int = 128
    """Output size of the projection head."""
    proj_hidden: int = 256
    """Hidden size of the projection head."""
    skip_incomplete_batches: bool = True
    """Skip a step whose batch lacks a group (no G step, as the original); False takes a detection-only step."""

    def check(self):
        super().check()
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 (got {self.temperature})")
        for name in ("asymmetric_f", "asymmetric_m", "lambda_infonce"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.proj_dim <= 0 or self.proj_hidden <= 0:
            raise ConfigError("proj_dim and proj_hidden must be > 0")
        self._choice("aug_strength", tuple(STRENGTHS))


class InfoNCE(Variant):
    name = "infonce"
    Config = InfoNCEConfig

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
