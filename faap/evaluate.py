"""Per-group COCO bbox evaluation (faster-coco-eval) of a clean or perturbed detector."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os

import numpy as np
import torch

from faap import GROUPS
from faap.data.coco import GroupSplit
from faap.data.loader import GenderDetection, make_loader
from faap.data.transforms import build_transforms
from faap.generator import perturb
from faap.metrics import METRICS, STAT_NAMES  # STAT_NAMES: what a metric reads; kept importable here


def coco_stats(gt: dict, detections: list[dict], image_ids: list[int] | None = None,
               backend: str = "faster") -> dict[str, float]:
    """The 12 COCO bbox stats of ``detections`` against ground truth ``gt`` (a COCO dict)."""
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster as Eval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco_gt.createIndex()
        if not detections:
            return {name: 0.0 for name in STAT_NAMES}
        coco_dt = coco_gt.loadRes(detections)
        ev = Eval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval writes -1 where a stat is undefined (e.g. no small objects): keep it as NaN.
    return {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(STAT_NAMES, ev.stats[:12])}


def summarize(result: dict) -> dict[str, float]:
    """Every registered metric (:data:`faap.metrics.METRICS`) of ``{"male": stats, "female": stats}``."""
    return {name: m.compute(result) for name, m in METRICS.items()}


class Evaluator:
    """Evaluates one split, group by group, with fixed loaders and ground truth."""

    def __init__(self, groups: dict[str, GroupSplit], detector, cfg, device, max_images: int = 0,
                 batch_size: int | None = None):
        self.detector, self.device, self.groups = detector, device, groups
        self.perturb_padding = cfg.perturb_padding
        tf = build_transforms(False, cfg.train_scales, cfg.max_size, cfg.eval_size)
        self.loaders, self.image_ids = {}, {}
        for name, gs in groups.items():
            if max_images and max_images < len(gs.images):
                gs = GroupSplit(gs.group, gs.split, gs.annotation_file, gs.image_dir,
                                dict(gs.coco, images=gs.images[:max_images]), gs.anns_by_image)
            self.image_ids[name] = [im["id"] for im in gs.images]
            ds = GenderDetection({name: gs}, tf, detector.category_to_label)
            self.loaders[name] = make_loader(ds, batch_size or max(1, cfg.batch_size * 2), num_workers=cfg.num_workers,
                                             device=device)
        self.settings = {"eval_size": cfg.eval_size, "max_size": cfg.max_size, "max_images": max_images}

    @torch.no_grad()
    def predict(self, group: str, generator=None, eps: float | None = None) -> list[dict]:
        dets = []
        for batch in self.loaders[group]:
            x = batch["pixel_values"].to(self.device)
            mask = batch["pixel_mask"].to(self.device)
            if generator is not None:
                x, _ = perturb(generator, x, mask, eps, self.perturb_padding)
            dets += self.detector.detections(self.detector(x, mask), batch["targets"])
        return dets

    def run(self, generator=None, eps: float | None = None, detections: dict | None = None) -> dict:
        """``{"male": stats, "female": stats}``; ``generator`` in eval mode, or None for clean.

        Pass a dict as ``detections`` to receive each group's COCO detections in it.
        """
        was_training = generator.training if generator is not None else False
        if generator is not None:
            generator.eval()
        try:
            out = {}
            for g in GROUPS:
                dets = self.predict(g, generator, eps)
                if detections is not None:
                    detections[g] = dets
                out[g] = coco_stats(self.groups[g].coco, dets, self.image_ids[g])
            return out
        finally:
            if was_training:
                generator.train()


def baseline_key(fingerprint: str, split: str, detector_id: str, settings: dict) -> str:
    blob = json.dumps({"fp": fingerprint, "split": split, "det": detector_id, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_dir() -> str:
    return os.environ.get("FAAP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "faap"))


def write_detections(path: str, detections: dict, image_ids: dict) -> None:
    """Detections per group (and the evaluated image ids), gzipped JSON, written atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with gzip.open(tmp, "wt") as f:
        json.dump({"image_ids": image_ids, "detections": detections}, f)
    os.replace(tmp, path)


def read_detections(path: str) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def clean_baseline(evaluator: Evaluator, fingerprint: str, split: str) -> dict:
    """The unperturbed detector's result, computed once per (dataset, split, detector, eval settings).

    Its detections are cached beside it (``clean_detections_path``) for paired bootstraps.
    """
    path = clean_detections_path(evaluator, fingerprint, split).replace(".dets.json.gz", ".json")
    if os.path.isfile(path) and os.path.isfile(clean_detections_path(evaluator, fingerprint, split)):
        with open(path) as f:
            return json.load(f)["result"]
    dets = {}
    result = evaluator.run(None, detections=dets)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_detections(clean_detections_path(evaluator, fingerprint, split), dets, evaluator.image_ids)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"fingerprint": fingerprint, "split": split, "detector": evaluator.detector.detector_id,
                   "settings": evaluator.settings, "result": nan_to_none(result)}, f, indent=2)
    os.replace(tmp, path)  # atomic: parallel workers never read half a file
    return result


def clean_detections_path(evaluator: Evaluator, fingerprint: str, split: str) -> str:
    key = baseline_key(fingerprint, split, evaluator.detector.detector_id, evaluator.settings)
    return os.path.join(cache_dir(), "baselines", f"{key}.dets.json.gz")


def nan_to_none(obj):
    """JSON-safe copy (NaN -> null)."""
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj
