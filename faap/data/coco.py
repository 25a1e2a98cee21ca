"""Reading gender-split COCO detection data, validating it, and fingerprinting it.

Two layouts are read:

* the original one::

    ROOT/women_split/{train,val,test}/*.jpg   ROOT/women_split/gender_women_{split}.json
    ROOT/men_split/{train,val,test}/*.jpg     ROOT/men_split/gender_men_{split}.json

  where the group comes from the folder (women -> female, men -> male);
* single COCO files ``ROOT/{split}.json`` whose images carry ``"gender": "female"|"male"``,
  with image files under ``ROOT/{split}/`` (or ``ROOT/`` itself).

Problems end in a :class:`~faap.errors.DataError` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from faap import GROUPS
from faap.errors import DataError

SPLITS = ("train", "val", "test")
FOLDERS = {"female": "women", "male": "men"}
BOX_TOLERANCE = 1.0
"""Pixels a box may stick out of its image (COCO rounding) before it counts as an error."""


@dataclass
class GroupSplit:
    """One group's images of one split, as a COCO dict plus where its files live."""

    group: str
    split: str
    annotation_file: str
    image_dir: str
    coco: dict
    anns_by_image: dict = field(default_factory=dict)

    @property
    def images(self) -> list[dict]:
        return self.coco["images"]

    def path(self, image: dict) -> str:
        return os.path.join(self.image_dir, image["file_name"])


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"annotation file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise DataError(f"annotation file {path} is not COCO format (needs 'images' and 'annotations' lists)")
    return data


def _check(gs: GroupSplit, check_files: bool) -> None:
    """Validate one group's split in place; fill ``anns_by_image``."""
    src = gs.annotation_file
    if not gs.images:
        raise DataError(f"empty split: {src} lists no images")
    if not os.path.isdir(gs.image_dir):
        raise DataError(f"image folder not found: {gs.image_dir} (for {src})")
    by_id = {}
    for im in gs.images:
        for key in ("id", "file_name", "width", "height"):
            if key not in im:
                raise DataError(f"{src}: image entry without '{key}': {json.dumps(im)[:120]}")
        by_id[im["id"]] = im
    if len(by_id) != len(gs.images):
        raise DataError(f"{src}: duplicate image ids")
    if check_files:
        present = set(os.listdir(gs.image_dir))
        missing = [im["file_name"] for im in gs.images
                   if im["file_name"] not in present and not os.path.isfile(gs.path(im))]
        if missing:
            raise DataError(f"{src}: {len(missing)} listed images missing from {gs.image_dir} "
                            f"(first: {', '.join(missing[:3])})")
    anns = {i: [] for i in by_id}
    for a in gs.coco["annotations"]:
        im = by_id.get(a.get("image_id"))
        if im is None:
            raise DataError(f"{src}: annotation {a.get('id')} refers to unknown image {a.get('image_id')}")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(f"{src}: annotation {a.get('id')} has no [x, y, w, h] bbox")
        x, y, w, h = bbox
        if w < 0 or h < 0 or x < -BOX_TOLERANCE or y < -BOX_TOLERANCE \
                or x + w > im["width"] + BOX_TOLERANCE or y + h > im["height"] + BOX_TOLERANCE:
            raise DataError(f"{src}: box {bbox} of annotation {a.get('id')} lies outside its image "
                            f"{im['file_name']} ({im['width']}x{im['height']})")
        anns[im["id"]].append(a)
    gs.anns_by_image = anns


def _layout(root: str) -> str:
    if not os.path.isdir(root):
        raise DataError(f"dataset folder not found: {root}")
    if os.path.isdir(os.path.join(root, "women_split")) or os.path.isdir(os.path.join(root, "men_split")):
        return "split_folders"
    if any(os.path.isfile(os.path.join(root, f"{s}.json")) for s in SPLITS):
        return "single_json"
    raise DataError(f"{root} holds neither women_split/ and men_split/ nor {{train,val,test}}.json")


def load_split(root: str, split: str, check_files: bool = True) -> dict[str, GroupSplit]:
    """Both groups of one split: ``{"male": GroupSplit, "female": GroupSplit}``."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (use one of {', '.join(SPLITS)})")
    out = {}
    if _layout(root) == "split_folders":
        for group in GROUPS:
            folder = os.path.join(root, f"{FOLDERS[group]}_split")
            if not os.path.isdir(folder):
                raise DataError(f"missing folder {folder}")
            ann = os.path.join(folder, f"gender_{FOLDERS[group]}_{split}.json")
            out[group] = GroupSplit(group, split, ann, os.path.join(folder, split), _read_json(ann))
    else:
        ann = os.path.join(root, f"{split}.json")
        coco = _read_json(ann)
        image_dir = os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root
        for im in coco["images"]:
            if im.get("gender") not in GROUPS:
                raise DataError(f"{ann}: image {im.get('id')} has gender {im.get('gender')!r} "
                                f"(expected 'female' or 'male')")
        for group in GROUPS:
            imgs = [im for im in coco["images"] if im["gender"] == group]
            ids = {im["id"] for im in imgs}
            sub = dict(coco, images=imgs, annotations=[a for a in coco["annotations"] if a.get("image_id") in ids])
            out[group] = GroupSplit(group, split, ann, image_dir, sub)
    for gs in out.values():
        _check(gs, check_files)
    return out


def fingerprint(root: str, splits=SPLITS) -> str:
    """sha256 over the annotation files' bytes and each split folder's sorted file list.

    Short (16 hex digits) and stable: it changes when any annotation or image list changes.
    """
    h = hashlib.sha256()
    for split in splits:
        for group, gs in sorted(load_split(root, split, check_files=False).items()):
            h.update(f"{split}/{group}\n".encode())
            with open(gs.annotation_file, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
            h.update("\n".join(sorted(im["file_name"] for im in gs.images)).encode())
    return h.hexdigest()[:16]
