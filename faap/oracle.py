"""The synthetic benchmark's positive control, measured: the clean detector's AP per group, and with
the hand-written perturbation that lifts the female images' veil (``faap data oracle``).

It runs the detector and the evaluator, so it sits above the data layer that writes the benchmark
(:mod:`faap.data.synth`, which holds the perturbation itself, :func:`~faap.data.synth.oracle_delta`).
"""

from __future__ import annotations

import torch

from faap.config import TrainConfig, build_config, dataset_settings
from faap.data.coco import load_split
from faap.data.synth import oracle_delta
from faap.data.transforms import pixel_bounds
from faap.detector import load_detector
from faap.errors import UserError
from faap.evaluate import Evaluator, coco_stats, summarize


def _oracle_setup(root: str, detector: str, eps: float | None, split: str, max_images: int):
    groups = load_split(root, split)
    info = groups["female"].coco.get("info", {}).get("synth_config")
    if not info:
        raise UserError(f"{root} is not a synthetic benchmark written by 'faap data synth' (no synth_config)")
    cfg = build_config(TrainConfig, {**dataset_settings(root), "data": root, "detector": detector})
    det = load_detector(detector)
    ev = Evaluator(groups, det, cfg, torch.device("cpu"), max_images=max_images, batch_size=50)
    return groups, det, ev, info["female"].get("veil", 1.0), cfg.eps_peak if eps is None else eps


@torch.no_grad()
def _detect(det, ev, group: str, veil: float, eps: float | None) -> list[dict]:
    """One group's detections, clean (``eps`` None) or with the oracle perturbation."""
    lo, hi = pixel_bounds()
    dets = []
    for b in ev.loaders[group]:
        x = b["pixel_values"]
        if eps is not None:
            x = torch.max(torch.min(x + oracle_delta(x, veil, eps), hi), lo)
        dets += det.detections(det(x, b["pixel_mask"]), b["targets"])
    return dets


def oracle_detections(root: str, detector: str = "demo", eps: float | None = None, split: str = "test",
                      max_images: int = 0) -> dict:
    """The female images' detections under the oracle perturbation (male images are left alone), with
    the evaluated image ids, for paired bootstraps against saved detections on the same images."""
    _, det, ev, veil, eps = _oracle_setup(root, detector, eps, split, max_images)
    return {"veil": veil, "eps": eps, "image_ids": ev.image_ids, "female": _detect(det, ev, "female", veil, eps)}


def oracle_effect(root: str, detector: str = "demo", eps: float | None = None, split: str = "test",
                  max_images: int = 0) -> dict:
    """AP per group of the clean detector, and with the oracle perturbation on female images only.

    The veil and the budget come from the dataset folder (its annotation files and
    ``faap_config.yaml``) unless ``eps`` is given. Returns both results and the gap change.
    """
    groups, det, ev, veil, eps = _oracle_setup(root, detector, eps, split, max_images)
    result = {"clean": {}, "oracle": {}}
    for group, name in (("male", "clean"), ("female", "clean"), ("female", "oracle")):
        dets = _detect(det, ev, group, veil, eps if name == "oracle" else None)
        result[name][group] = coco_stats(groups[group].coco, dets, ev.image_ids[group])
    result["oracle"]["male"] = result["clean"]["male"]  # the oracle leaves male images alone
    clean, oracle = summarize(result["clean"]), summarize(result["oracle"])
    return {"split": split, "veil": veil, "eps": eps, "images": {g: len(ev.image_ids[g]) for g in ev.image_ids},
            "clean": clean, "oracle": oracle, "AP_gap_change": oracle["AP_gap"] - clean["AP_gap"]}
