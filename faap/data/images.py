"""Finding images that cannot be decoded, before they stop a run halfway (``faap data inspect``,
and the up-front check of ``faap train`` / ``faap eval --generator``).

PIL opens a truncated file lazily and fails only when the pixels are read ("image file is
truncated"), inside a DataLoader worker, without naming the file. So every image is decoded here,
in a process pool: fully for ``inspect``; for the up-front check JPEGs are decoded in draft mode
(DCT scaling to 1/8 still reads the whole entropy-coded stream, so truncation shows, at a
fraction of the cost) and PNGs are verified (every chunk's CRC, up to IEND).

This module reads the splits through :mod:`faap.data.coco`, which never imports it back.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

from PIL import Image

from faap.data.coco import SPLITS, GroupSplit, fingerprint, load_split
from faap.errors import DataError

POOL_THRESHOLD = 64
"""Below this many images the check runs in-process (a pool's start-up costs more)."""


def decode_error(path: str, full: bool = True) -> str | None:
    """Why ``path`` cannot be decoded (one line), or None when it decodes."""
    try:
        with Image.open(path) as im:
            if full:
                im.convert("RGB")  # what the dataset does
            elif im.format == "PNG":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return None


def _check(args):
    path, full = args
    return path, decode_error(path, full)


def bad_images(paths: list[str], full: bool = True, workers: int | None = None, progress: bool = True,
               desc: str = "checking images") -> dict[str, str]:
    """``{path: reason}`` of the images among ``paths`` that cannot be decoded (in parallel)."""
    from tqdm import tqdm

    jobs = [(p, full) for p in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    bar = dict(total=len(jobs), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    if workers == 1 or len(jobs) < POOL_THRESHOLD:
        results = [_check(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_check, jobs, chunksize=max(1, len(jobs) // (workers * 8))), **bar))
    return {p: why for p, why in results if why is not None}


def without_images(gs: GroupSplit, paths: set[str]) -> GroupSplit:
    """``gs`` without the images whose file is in ``paths`` (and without their annotations)."""
    keep = [im for im in gs.images if gs.path(im) not in paths]
    ids = {im["id"] for im in keep}
    coco = dict(gs.coco, images=keep, annotations=[a for a in gs.coco["annotations"] if a["image_id"] in ids])
    return GroupSplit(gs.group, gs.split, gs.annotation_file, gs.image_dir, coco,
                      {i: a for i, a in gs.anns_by_image.items() if i in ids})


def screen(splits: dict[str, dict[str, GroupSplit]], skip: bool, progress: bool = True) -> tuple[dict, dict]:
    """The up-front check of every image of ``splits`` (``{split: {group: GroupSplit}}``).

    A bad image stops here with one line naming it, unless ``skip``: then the bad images are left
    out. Returns (the splits, without bad images; ``{split: [bad file, ...]}``).
    """
    paths = [gs.path(im) for groups in splits.values() for gs in groups.values() for im in gs.images]
    bad = bad_images(paths, full=False, progress=progress)
    if bad and not skip:
        first = sorted(bad)[0]
        raise DataError(f"cannot decode image {first} ({bad[first]}); {len(bad)} bad image(s) in all: list them "
                        f"with 'faap data inspect', or leave them out with --skip-bad-images")
    cleaned, skipped = {}, {}
    for split, groups in splits.items():
        cleaned[split] = {g: without_images(gs, set(bad)) for g, gs in groups.items()}
        skipped[split] = sorted(p for gs in groups.values() for p in map(gs.path, gs.images) if p in bad)
        for g, gs in cleaned[split].items():
            if not gs.images:
                raise DataError(f"no decodable image left in the {g} group of split {split} ({gs.annotation_file})")
    return cleaned, skipped


def inspect(root: str, decode: bool = True, workers: int | None = None, progress: bool = True) -> dict:
    """Counts per group and split, the fingerprint, and the problems found (never raises on data).

    With ``decode`` every image is decoded (in parallel); the bad ones are listed in
    ``bad_images`` (``{path: reason}``) and each is a problem.
    """
    report = {"root": root, "splits": {}, "problems": [], "bad_images": {}}
    for split in SPLITS:
        try:
            groups = load_split(root, split)
        except DataError as e:
            report["problems"].append(str(e))
            continue
        report["splits"][split] = {
            g: {"images": len(gs.images), "boxes": len(gs.coco["annotations"])} for g, gs in groups.items()
        }
        if decode:
            paths = [gs.path(im) for gs in groups.values() for im in gs.images]
            bad = bad_images(paths, full=True, workers=workers, progress=progress, desc=f"decoding {split}")
            report["bad_images"].update(bad)
            report["problems"] += [f"cannot decode image {p} ({why})" for p, why in sorted(bad.items())]
    if not report["problems"]:
        report["fingerprint"] = fingerprint(root)
    return report
