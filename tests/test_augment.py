import colorsys

import pytest
import torch

from faap.augment import _hsv_to_rgb, _rgb_to_hsv, color_augment
from faap.data.transforms import normalize


def test_hsv_matches_colorsys_and_round_trips():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 5, 7)
    hsv = _rgb_to_hsv(x)
    for b, i, j in [(0, 1, 2), (1, 4, 6), (0, 0, 0)]:
        assert hsv[b, :, i, j].tolist() == pytest.approx(colorsys.rgb_to_hsv(*x[b, :, i, j].tolist()), abs=1e-5)
    torch.testing.assert_close(_hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)


def test_color_augment_per_image_and_differentiable():
    torch.manual_seed(0)
    x = normalize(torch.rand(1, 3, 16, 16)).repeat(4, 1, 1, 1).requires_grad_(True)
    assert color_augment(x, "none") is x
    y = color_augment(x, "strong")
    assert y.shape == x.shape
    assert not torch.allclose(y[0], y[1])  # each image draws its own factors
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
