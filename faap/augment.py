"""SimCLR-style colour augmentation of a whole batch on its device, one draw per image.

Strengths (as the original InfoNCE scripts): ``none``; ``weak`` = ColorJitter(0.2, 0.2, 0.2,
hue 0.05); ``medium`` = ColorJitter(0.3, 0.3, 0.3, hue 0.1); ``strong`` = ColorJitter(0.4,
0.4, 0.4, hue 0.1) + RandomGrayscale(p 0.2). Applied in [0, 1] pixel space, then
re-normalised. The original looped over images in Python; here every image draws its own
factors and the whole batch is transformed with tensor ops (the order of the four jitter
operations is drawn once per batch, as torchvision draws it once per call).
"""

from __future__ import annotations

import torch

from faap.data.transforms import denormalize, normalize

STRENGTHS = {
    "none": None,
    "weak": (0.2, 0.2, 0.2, 0.05, 0.0),
    "medium": (0.3, 0.3, 0.3, 0.1, 0.0),
    "strong": (0.4, 0.4, 0.4, 0.1, 0.2),
}
"""name -> (brightness, contrast, saturation, hue, grayscale probability)."""


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    """Differentiable RGB -> HSV of B x 3 x H x W images in [0, 1] (torchvision's is in-place)."""
    r, g, b = img.unbind(1)
    maxc, argmax = img.max(1)
    delta = maxc - img.min(1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(argmax == 0, bc - gc, torch.where(argmax == 1, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Rows: sextant 0..5 -> (r, g, b) as in colorsys.hsv_to_rgb.
    table = torch.stack([torch.stack(c, 1) for c in
                         ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1)  # B x 6 x 3 x H x W
    return table.gather(1, i[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1)


def _gray(x):
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _factor(n, spread, device, generator):
    return (1 + (torch.rand(n, 1, 1, 1, device=device, generator=generator) * 2 - 1) * spread).clamp(min=0)


def color_augment(x: torch.Tensor, strength: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment normalised images ``x`` (B x 3 x H x W); differentiable with respect to ``x``."""
    params = STRENGTHS[strength]
    if params is None:
        return x
    b, c, s, h, p_gray = params
    n, dev = x.shape[0], x.device
    img = denormalize(x).clamp(0, 1)
    ops = torch.randperm(4, device="cpu", generator=None if generator is None or generator.device.type != "cpu"
                         else generator).tolist()
    for op in ops:
        if op == 0:
            img = (img * _factor(n, b, dev, generator)).clamp(0, 1)
        elif op == 1:
            mean = _gray(img).mean(dim=(1, 2, 3), keepdim=True)
            f = _factor(n, c, dev, generator)
            img = (img * f + mean * (1 - f)).clamp(0, 1)
        elif op == 2:
            f = _factor(n, s, dev, generator)
            img = (img * f + _gray(img) * (1 - f)).clamp(0, 1)
        else:
            shift = (torch.rand(n, 1, 1, device=dev, generator=generator) * 2 - 1) * h
            hsv = _rgb_to_hsv(img)
            hue = torch.remainder(hsv[:, 0] + shift, 1.0)
            img = _hsv_to_rgb(torch.cat([hue.unsqueeze(1), hsv[:, 1:]], 1))
    if p_gray > 0:
        to_gray = (torch.rand(n, 1, 1, 1, device=dev, generator=generator) < p_gray).to(img.dtype)
        img = to_gray * _gray(img).expand_as(img) + (1 - to_gray) * img
    return normalize(img)
