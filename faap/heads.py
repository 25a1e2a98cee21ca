"""The small trainable heads on the detector's decoder features (B x Q x D)."""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class ProjectionHead(nn.Module):
    """Mean over queries -> Linear D->hidden, ReLU -> Linear hidden->proj_dim -> L2 normalise."""

    def __init__(self, in_dim: int, proj_dim: int = 128, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))

    def forward(self, features):
        return F.normalize(self.net(features.mean(dim=1)), dim=-1)


class GenderDiscriminator(nn.Module):
    """Mean over queries -> LayerNorm(D) -> Linear D->h, ReLU -> Linear h->h, ReLU -> Linear h->2.

    Labels: male 0, female 1.
    """

    def __init__(self, in_dim: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))

    def forward(self, features):
        return self.net(features.mean(dim=1))
