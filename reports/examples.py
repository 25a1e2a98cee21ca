"""A grid of example validation images per group: clean | perturbed | perturbation, with detections drawn."""

from __future__ import annotations

import os

import torch
from PIL import Image, ImageDraw

from faap import checkpoint as ckpt
from faap.data.loader import GenderDetection, collate
from faap.data.transforms import build_transforms, denormalize
from faap.generator import build_generator, perturb
from faap.rundir import RunDir

SCORE = 0.5
"""Detections drawn: score above this."""


def _to_image(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype("uint8"))


def _draw(img: Image.Image, dets: list[dict], gt: list[dict], scale: float) -> Image.Image:
    d = ImageDraw.Draw(img)
    for a in gt:
        x, y, w, h = (v * scale for v in a["bbox"])
        d.rectangle([x, y, x + w, y + h], outline=(0, 200, 0))
    for det in dets:
        if det["score"] >= SCORE:
            x, y, w, h = (v * scale for v in det["bbox"])
            d.rectangle([x, y, x + w, y + h], outline=(255, 40, 40))
    return img


@torch.no_grad()
def example_grid(runs: dict[str, str], out_path: str, per_group: int = 2, device: str = "cpu") -> str:
    """``runs``: condition name -> run folder (its selected checkpoint is used). Rows: group x image x condition."""
    from faap.runtime import open_run, run_config

    cfg, _, groups, detector = open_run(next(iter(runs.values())), None, "val", device)
    tf = build_transforms(False, cfg.train_scales, cfg.max_size, cfg.eval_size)
    gens = {}
    for name, run in runs.items():
        state = ckpt.load(run, RunDir(run).selected_epoch(), map_location=device)
        run_cfg = run_config(run)[0]
        g = build_generator(run_cfg.channels_last, device, state["generator"])
        gens[name] = (g.eval(), state["eps"], run_cfg.perturb_padding)
    rows = []
    for group in ("female", "male"):
        gs = groups[group]
        ds = GenderDetection({group: gs}, tf, detector.category_to_label)
        for i in range(min(per_group, len(ds))):
            batch = collate([ds[i]])
            x, mask, target = batch["pixel_values"], batch["pixel_mask"], batch["targets"]
            gt = gs.anns_by_image[target[0]["image_id"]]
            scale = x.shape[-1] / target[0]["orig_size"][1]
            row = [_draw(_to_image(denormalize(x)[0]), detector.detections(detector(x, mask), target), gt, scale)]
            for name, (gen, eps, padding) in gens.items():
                x_adv, delta = perturb(gen, x, mask, eps, padding)
                row.append(_draw(_to_image(denormalize(x_adv)[0]), detector.detections(detector(x_adv, mask), target),
                                 gt, scale))
                row.append(_to_image((delta[0] / eps * 0.5 + 0.5)))
            rows.append((f"{group} {i}", row))
    w, h = rows[0][1][0].size
    labels = ["clean"] + [f"{n}{suffix}" for n in gens for suffix in ("", " perturbation")]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(measure, label, w - 4) for label in labels]
    top = 12 * max(len(lines) for lines in wrapped) + 2  # the column labels, a line per 12 px
    sheet = Image.new("RGB", (w * len(labels), top + (h + 14) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((j * w + 2, 1 + 12 * k), line, fill="black")
    for i, (label, row) in enumerate(rows):
        draw.text((2, top + i * (h + 14)), label, fill="black")
        for j, img in enumerate(row):
            sheet.paste(img, (j * w, top + 14 + i * (h + 14)))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    sheet.save(out_path)
    return out_path


def _wrap(draw, text: str, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken between words (a longer word across lines)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
            continue
        while draw.textlength(word) > width and len(word) > 1:
            cut = max([k for k in range(1, len(word)) if draw.textlength(word[:k]) <= width] or [1])
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    return lines or [""]
