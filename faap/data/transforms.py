"""DETR-style image transforms with boxes, built on torchvision.transforms.v2.

Train: random horizontal flip, then either a multi-scale resize, or (with ``random_crop``)
DETR's resize -> random-size crop -> multi-scale resize; eval: resize the shorter side.
Images leave as ImageNet-normalised float tensors; boxes as ``xyxy`` pixels.
"""

from __future__ import annotations

import random

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pixel_bounds(device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest valid normalised pixel value per channel (shape 1 x 3 x 1 x 1)."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def normalize(x01: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x * std + mean


class RandomSizeCrop(torch.nn.Module):
    """DETR's RandomSizeCrop: a crop whose side lengths are uniform in [min_size, max_size]."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size, self.max_size = min_size, max_size

    def forward(self, img, target):
        h, w = img.shape[-2:]
        ch = random.randint(min(self.min_size, h), min(h, self.max_size))
        cw = random.randint(min(self.min_size, w), min(w, self.max_size))
        top, left = random.randint(0, h - ch), random.randint(0, w - cw)
        return v2.functional.crop(img, top, left, ch, cw), {
            **target, "boxes": v2.functional.crop(target["boxes"], top, left, ch, cw)}


def build_transforms(train: bool, scales: list[int], max_size: int, eval_size: int,
                     random_crop: bool = False, crop_scales=(400, 500, 600), crop_size=(384, 600)):
    """A callable ``(PIL image, {"boxes": xyxy, "labels": ...}) -> (tensor, target)``."""
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    sanitize = v2.SanitizeBoundingBoxes(labels_getter=lambda inputs: inputs[1]["labels"])
    if not train:
        steps = [v2.Resize(eval_size, max_size=max_size if max_size > eval_size else None)]
    else:
        multi = v2.RandomShortestSize(scales, max_size=max_size)
        steps = [v2.RandomHorizontalFlip()]
        if random_crop:
            crop = v2.Compose([v2.RandomShortestSize(list(crop_scales)), RandomSizeCrop(*crop_size), multi])
            steps.append(v2.RandomChoice([multi, crop]))
        else:
            steps.append(multi)
    pipeline = v2.Compose(steps + [to_tensor, v2.ClampBoundingBoxes(), sanitize])

    def apply(image, target):
        size = (image.height, image.width)
        target = {**target, "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=size)}
        img, target = pipeline(tv_tensors.Image(v2.functional.pil_to_tensor(image)), target)
        return img.as_subclass(torch.Tensor), {**target, "boxes": target["boxes"].as_subclass(torch.Tensor)}

    return apply
