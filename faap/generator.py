"""The perturbation generator G: a small U-Net whose output is bounded by eps * tanh."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from faap.data.transforms import pixel_bounds


class ConvBlock(nn.Sequential):
    """2 x [conv3x3, BN, ReLU]; the first conv carries the stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Up(nn.Module):
    """Bilinear resize to the skip's size, conv3x3, BN, ReLU, then add the skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(x) + skip


class PerturbationGenerator(nn.Module):
    """U-Net 3->32->64->128 (bottleneck 128) ->64->32->3; returns the raw map (before tanh)."""

    def __init__(self, base: int = 32, channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.enc1 = ConvBlock(3, base, 1)
        self.enc2 = ConvBlock(base, base * 2, 2)
        self.enc3 = ConvBlock(base * 2, base * 4, 2)
        self.bottleneck = ConvBlock(base * 4, base * 4, 1)
        self.up2 = Up(base * 4, base * 2)
        self.up1 = Up(base * 2, base)
        self.out = nn.Conv2d(base, 3, 3, 1, 1)

    def forward(self, x):
        if self.channels_last:  # NHWC convolutions: faster on recent GPUs and on CPU (oneDNN)
            x = x.contiguous(memory_format=torch.channels_last)
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = self.bottleneck(self.enc3(e2))
        return self.out(self.up1(self.up2(b, e2), e1)).contiguous()


def perturb(generator: nn.Module, x: torch.Tensor, mask: torch.Tensor, eps: float):
    """``x' = clamp(x + eps * tanh(G(x)))`` inside the valid normalised pixel range.

    Padding (``mask == 0``) is left untouched. Returns ``(x', delta)`` with ``delta = x' - x``
    measured after the clamp, i.e. the change the detector actually sees.
    """
    lo, hi = pixel_bounds(x.device)
    m = mask.unsqueeze(1).to(x.dtype)
    x_adv = torch.max(torch.min(x + eps * torch.tanh(generator(x)) * m, hi), lo)
    return x_adv, x_adv - x
