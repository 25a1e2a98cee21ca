"""A deterministic synthetic gender-split detection benchmark.

Images are person-like shapes (an ellipse body with horizontal stripes and a round head)
on textured backgrounds, written in the original layout
(``women_split/{split}/*.png`` + ``women_split/gender_women_{split}.json``, same for men).

The knobs that create the fairness problem (documented in the README):

* the female group is *harder*: lower object/background contrast, more person-like
  distractors (bodies without a head), stronger background texture;
* the female group is *under-represented* in ``train`` (``male_share`` of the images are
  male), which is the split the demo detector is trained on;
* the group is *visible*: male images are tinted cool (blue), female warm (red), so a
  discriminator on detector features can tell the groups apart.

Everything is drawn from ``numpy.random.default_rng([seed, split, group, index])``, so the
same seed gives byte-identical files whatever the order or number of worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from faap.config import CONFIG_DIR, DATASET_CONFIG
from faap.errors import UserError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val", "test")
VEIL_GREY = 0.5
"""Grey level (0-1 pixel units) that the veil pulls pixels toward."""
GROUP_FOLDERS = {"female": "women", "male": "men"}


@dataclass
class GroupStyle:
    """How one group's images look."""

    contrast: tuple[float, float]
    """Range of the person/background brightness difference (0-1 pixel units)."""
    distractors: tuple[int, int]
    """Range (inclusive) of head-less person-like distractor shapes per image."""
    texture: float
    """Amplitude of the low-frequency background texture."""
    tint: tuple[float, float, float]
    """Per-channel (R, G, B) multiplier: the visible group cue."""
    veil: float = 1.0
    """Contrast kept by a grey veil over the whole image (1: none): ``x -> VEIL_GREY + veil * (x - VEIL_GREY)``."""


@dataclass
class SynthConfig:
    """Sizes and difficulty knobs of the synthetic benchmark."""

    seed: int = 0
    """Seed of every random draw."""
    size: int = 128
    """Image side in pixels."""
    n_train: int = 4000
    """Training images over both groups."""
    male_share: float = 0.8
    """Fraction of training images that are male (the under-representation knob)."""
    n_val: int = 250
    """Validation images per group."""
    n_test: int = 300
    """Test images per group."""
    persons: tuple[int, int] = (1, 3)
    """Range (inclusive) of persons per image."""
    female: GroupStyle = field(
        default_factory=lambda: GroupStyle((0.06, 0.15), (4, 8), 0.20, (1.15, 0.95, 0.82), veil=0.5)
    )
    """Style of female images (the harder group)."""
    male: GroupStyle = field(
        default_factory=lambda: GroupStyle((0.30, 0.50), (0, 2), 0.10, (0.82, 0.95, 1.15))
    )
    """Style of male images."""

    def counts(self, split: str) -> dict[str, int]:
        if split == "train":
            n_m = int(round(self.n_train * self.male_share))
            return {"male": n_m, "female": self.n_train - n_m}
        n = self.n_val if split == "val" else self.n_test
        return {"male": n, "female": n}


def _background(rng, size: int, texture: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0.35, 0.65)
    img = np.full((size, size), base, np.float32)
    for _ in range(4):
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 9), rng.uniform(0, 2 * np.pi)
        img += texture * 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    return img


def _shape_mask(yy, xx, cx, cy, ax, ay):
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def _draw_figure(img, rng, yy, xx, contrast, with_head, size):
    """Draw one striped figure in place; return its box (x0, y0, x1, y1) or None."""
    height = rng.uniform(0.22, 0.5) * size
    head_r = 0.13 * height if with_head else 0.0
    body_h = height - 2 * head_r
    ax, ay = rng.uniform(0.18, 0.28) * height, body_h / 2
    cx = rng.uniform(ax + 1, size - ax - 1)
    top = rng.uniform(1, size - height - 1)
    cy = top + 2 * head_r + ay
    mask = _shape_mask(yy, xx, cx, cy, ax, ay)
    if with_head:
        mask |= _shape_mask(yy, xx, cx, top + head_r, head_r, head_r)
    stripes = 0.75 + 0.25 * np.sign(np.sin(yy * rng.uniform(0.5, 1.2)))
    sign = rng.choice([-1.0, 1.0])
    local = img[mask].mean() if mask.any() else 0.5
    img[mask] = local + sign * contrast * stripes[mask]
    if not with_head:
        return None
    return (cx - ax, top, cx + ax, top + height)


def render(cfg: SynthConfig, split: str, group: str, index: int) -> tuple[np.ndarray, list]:
    """One image (H x W x 3 uint8) and its person boxes in COCO [x, y, w, h]."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 0 if group == "male" else 1, index])
    style = cfg.female if group == "female" else cfg.male
    size = cfg.size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _background(rng, size, style.texture)
    for _ in range(rng.integers(style.distractors[0], style.distractors[1] + 1)):
        _draw_figure(img, rng, yy, xx, rng.uniform(*style.contrast), False, size)
    boxes = []
    for _ in range(rng.integers(cfg.persons[0], cfg.persons[1] + 1)):
        x0, y0, x1, y1 = _draw_figure(img, rng, yy, xx, rng.uniform(*style.contrast), True, size)
        boxes.append([round(float(x0), 2), round(float(y0), 2), round(float(x1 - x0), 2), round(float(y1 - y0), 2)])
    img = img + rng.normal(0, 0.03, img.shape).astype(np.float32)
    rgb = np.clip(img[..., None] * np.asarray(style.tint, np.float32), 0, 1)
    if style.veil != 1.0:  # skipped at 1 so that veil-free images stay byte-identical to the demo detector's
        rgb = VEIL_GREY + style.veil * (rgb - VEIL_GREY)
    return (rgb * 255 + 0.5).astype(np.uint8), boxes


def _render_to_file(args):
    cfg, split, group, index, path = args
    img, boxes = render(cfg, split, group, index)
    Image.fromarray(img).save(path, compress_level=1)
    return boxes


def generate(out: str, cfg: SynthConfig | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Write the benchmark under ``out``; return image counts per split and group."""
    from tqdm import tqdm

    cfg = cfg or SynthConfig()
    if os.path.exists(out) and os.listdir(out):
        raise UserError(f"output folder {out} exists and is not empty")
    jobs, layout = [], {}
    for split in SPLITS:
        for group in ("female", "male"):
            n = cfg.counts(split)[group]
            folder = os.path.join(out, f"{GROUP_FOLDERS[group]}_split", split)
            os.makedirs(folder, exist_ok=True)
            names = [f"{group}_{split}_{i:06d}.png" for i in range(n)]
            layout[(split, group)] = names
            jobs += [(cfg, split, group, i, os.path.join(folder, name)) for i, name in enumerate(names)]
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_render_to_file, jobs, chunksize=64), total=len(jobs),
                            desc="synth images", disable=not progress, mininterval=1.0))
    it = iter(results)
    counts = {}
    for split in SPLITS:
        image_id = ann_id = 1
        for group in ("female", "male"):
            names = layout[(split, group)]
            images, anns = [], []
            for name in names:
                boxes = next(it)
                images.append({"id": image_id, "file_name": name, "width": cfg.size, "height": cfg.size,
                               "gender": group})
                for b in boxes:
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": b,
                                 "area": round(b[2] * b[3], 2), "iscrowd": 0})
                    ann_id += 1
                image_id += 1
            coco = {"info": {"description": "faap synthetic benchmark", "synth_config": asdict(cfg)},
                    "images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
            path = os.path.join(out, f"{GROUP_FOLDERS[group]}_split", f"gender_{GROUP_FOLDERS[group]}_{split}.json")
            with open(path, "w") as f:
                json.dump(coco, f)
            counts[f"{group}_{split}"] = len(images)
    # The benchmark carries its settings (128 px images, its budget): the trainer applies them.
    shutil.copyfile(os.path.join(CONFIG_DIR, "synthetic.yaml"), os.path.join(out, DATASET_CONFIG))
    return counts


def oracle_delta(x: torch.Tensor, veil: float, eps: float) -> torch.Tensor:
    """The hand-written perturbation that lifts the veil, within the budget: a positive control.

    ``x`` is a normalised batch behind a veil of strength ``veil``; the veil is undone by
    ``(1 / veil - 1) * (pixel - VEIL_GREY)``, converted to normalised units and clipped to
    ``[-eps, eps]``, the same budget G has.
    """
    from faap.data.transforms import IMAGENET_STD, denormalize

    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((1 / veil - 1) * (denormalize(x) - VEIL_GREY) / std).clamp(-eps, eps)
