"""``faap eval --run RUN --dump-images N``: the clean image, the perturbed image and the amplified
perturbation of the first N images of each group of a split, as PNGs with an index, for one
checkpoint of a run (default: the selected one)."""

from __future__ import annotations

import csv
import os
import re
import shutil

import torch
from PIL import Image

from faap import GROUPS
from faap.data.loader import GenderDetection
from faap.data.transforms import build_transforms, denormalize
from faap.errors import UserError
from faap.generator import perturb
from faap.reeval import check_split, run_generator
from faap.rundir import RunDir
from faap.runtime import open_run, resolve_device

KINDS = ("clean", "perturbed", "perturbation")
"""The three PNGs of an image; each is a column of the index."""

PERTURBATION_PNG = "delta mapped linearly from [-eps, +eps] to [0, 255] per channel (128: unchanged pixel)"
NORM_UNITS = "ImageNet-normalised pixel units, as eps (L2 over the whole image, all channels)"
INDEX_COLUMNS = ("group", "image_id", "source_file", *KINDS, "height", "width", "linf", "l2")


def to_png(image01: torch.Tensor, path: str) -> None:
    """A 3 x H x W tensor in [0, 1] as an 8-bit RGB PNG."""
    pixels = (image01.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(pixels).save(path)


def _stem(file_name: str) -> str:
    """The source file's name without folder or extension, safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", os.path.splitext(os.path.basename(file_name))[0])


@torch.no_grad()
def _dump_one(generator, x: torch.Tensor, eps: float, perturb_padding: bool, out_dir: str, prefix: str) -> dict:
    """Write the three PNGs of one normalised image; its file names and perturbation norms.

    The image goes through G alone (a batch of one, no padding): in an evaluation batch G also
    sees the padding up to the largest image, so pixels near the border may differ slightly there.
    """
    x = x.unsqueeze(0)
    mask = torch.ones(1, *x.shape[-2:], dtype=torch.long, device=x.device)
    x_adv, delta = perturb(generator, x, mask, eps, perturb_padding)
    images = {"clean": denormalize(x)[0], "perturbed": denormalize(x_adv)[0], "perturbation": (delta[0] / eps + 1) / 2}
    names = {kind: f"{prefix}_{kind}.png" for kind in KINDS}
    for kind in KINDS:
        to_png(images[kind], os.path.join(out_dir, names[kind]))
    return {**names, "height": x.shape[-2], "width": x.shape[-1], "linf": float(delta.abs().max()),
            "l2": float(delta.norm())}


def _dump_groups(groups: dict, cfg, generator, eps: float, n: int, out_dir: str, device, progress: bool) -> list[dict]:
    """Index rows of the first ``n`` images of each group, their PNGs written to ``out_dir``."""
    from tqdm import tqdm

    tf = build_transforms(False, cfg.train_scales, cfg.max_size, cfg.eval_size)  # the evaluated size
    datasets = {g: GenderDetection({g: groups[g]}, tf) for g in GROUPS}
    bar = tqdm(total=sum(min(n, len(ds)) for ds in datasets.values()), desc="dumping images", disable=not progress,
               leave=False, mininterval=1.0)
    rows = []
    for group, ds in datasets.items():
        for k in range(min(n, len(ds))):
            image, target = ds[k]
            source = ds.items[k][1]["file_name"]
            prefix = f"{group}_{k:03d}_{_stem(source)}"
            written = _dump_one(generator, image.to(device), eps, cfg.perturb_padding, out_dir, prefix)
            rows.append({"group": group, "image_id": target["image_id"], "source_file": source, **written})
            bar.update()
    bar.close()
    return rows


def _write_index(run: RunDir, out_dir: str, index: dict) -> None:
    run.write_json(os.path.join(out_dir, "index.json"), index)
    with open(os.path.join(out_dir, "index.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(index["images"])


def dump_images(run_dir: str, n: int, split: str = "val", epoch: int | None = None, device: str = "auto",
                progress: bool = True) -> dict:
    """Write ``dumps/{split}_epoch_NNNN/`` of the run (PNGs, ``index.json``, ``index.csv``); return the index.

    Everything is checked before the first file is written, and the folder appears whole or not at
    all: it is filled under a temporary name and renamed (an earlier dump of that split and epoch
    is replaced). The eps is the checkpoint's own.
    """
    if n < 1:
        raise UserError(f"--dump-images must be at least 1 (got {n})")
    check_split(split)
    run = RunDir(run_dir)
    if epoch is None:
        epoch = run.selected_epoch()
    dev = resolve_device(device)
    cfg, state, groups, _ = open_run(run_dir, epoch, split, dev, with_detector=False)  # G alone
    generator, eps = run_generator(cfg, state, dev), state["eps"]
    final = run.dump_dir(split, state["epoch"])
    partial = final + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        rows = _dump_groups(groups, cfg, generator, eps, n, partial, dev, progress)
        index = {"run": os.path.abspath(run_dir), "epoch": state["epoch"], "split": split, "eps": eps,
                 "images_per_group": n, "norm_units": NORM_UNITS, "perturbation_png": PERTURBATION_PNG,
                 "images": rows}
        _write_index(run, partial, index)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if not os.listdir(os.path.dirname(final)):
            os.rmdir(os.path.dirname(final))
        raise
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return {**index, "folder": final}
