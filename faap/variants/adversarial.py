"""The "7th" adversarial baseline: a gender discriminator on decoder features (WGAN-GD 7th)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from faap import FEMALE, MALE
from faap.config import TrainConfig, bounded
from faap.heads import GenderDiscriminator
from faap.losses import adversarial_fairness
from faap.variants.base import StepState, Variant


@dataclass
class AdversarialConfig(TrainConfig):
    k_d: int = bounded(4, ge=1)
    """Discriminator steps per generator step."""
    lr_d: float = bounded(1e-4, gt=0)
    """Adam learning rate of the discriminator."""
    alpha: float = bounded(0.2, ge=0)
    """Entropy weight in the fairness loss."""
    lambda_fair: float = bounded(2.0, ge=0)
    """Weight of the fairness term in G's loss."""
    fair_f_scale: float = bounded(1.0, ge=0)
    """Scale of the female fairness term."""
    fair_m_scale: float = bounded(0.5, ge=0)
    """Scale of the male fairness term."""
    disc_hidden: int = bounded(256, gt=0)
    """Hidden size of the discriminator."""
    replay_bn_updates: bool = True
    """Give G's BatchNorm running statistics the k_d extra updates per group of the original's recomputed passes."""


def _labels(n: int, value: int, device) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.long, device=device)


class Adversarial(Variant):
    name = "adversarial"
    Config = AdversarialConfig
    original_checkpoint_key = "discriminator"
    label = "7th (adversarial)"

    def __init__(self, cfg: AdversarialConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.disc = GenderDiscriminator(hidden_dim, cfg.disc_hidden)

    def extra_generator_passes(self) -> int:
        # The original recomputed G (train mode) for each of the k_d discriminator steps.
        return self.cfg.k_d if self.cfg.replay_bn_updates else 0

    def make_optimizers(self):
        return {"disc": torch.optim.Adam(self.disc.parameters(), lr=self.cfg.lr_d)}

    def discriminator_loss(self, features: torch.Tensor, n_female: int) -> torch.Tensor:
        """``mean(CE(D(h_f), female), CE(D(h_m), male))`` over the groups present."""
        logits = self.disc(features)
        parts = []
        if n_female:
            parts.append(F.cross_entropy(logits[:n_female], _labels(n_female, FEMALE, logits.device)))
        if len(features) - n_female:
            parts.append(F.cross_entropy(logits[n_female:], _labels(len(features) - n_female, MALE, logits.device)))
        return torch.stack(parts).mean()

    def before_generator_step(self, state: StepState) -> dict[str, float]:
        # G and the detector do not change during the k_d discriminator steps, so the
        # perturbed features are computed once (the original recomputed them k_d times).
        opt = self.optimizers["disc"]
        recompute = state.extras.get("recompute_features")
        features = None if recompute is not None else state.out.features.detach()
        losses = []
        for _ in range(self.cfg.k_d):
            if recompute is not None:
                features = recompute()
            loss = self.discriminator_loss(features, state.n_female)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if state.extras.get("sync") is not None:
                state.extras["sync"](list(self.disc.parameters()))
            opt.step()
            losses.append(loss.item())
        return {"d_loss": sum(losses) / len(losses)}

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        logits = self.disc(state.out.features)
        n_f, dev = state.n_female, logits.device
        fair_f = adversarial_fairness(logits[state.female], _labels(n_f, FEMALE, dev), self.cfg.alpha)
        fair_m = adversarial_fairness(logits[state.male], _labels(len(logits) - n_f, MALE, dev), self.cfg.alpha)
        return {"fair": self.cfg.fair_f_scale * fair_f + self.cfg.fair_m_scale * fair_m}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        return {**super().weight_dict(epoch), "fair": self.cfg.lambda_fair}
