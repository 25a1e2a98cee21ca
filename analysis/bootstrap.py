"""Bootstrap confidence intervals over images for COCO AP and AR, matching run once.

COCO matching (which detection matches which ground truth, per IoU threshold) does not
depend on which images are drawn, so it is computed once per (ground truth, detections)
with pycocotools' ``evaluate()``. A bootstrap replicate only re-weights images (how often
each is drawn), and COCO's accumulation with image weights is: sort all detections by
score once, weighted cumulative true and false positives, weighted ground-truth count,
the precision envelope, precision at the 101 recall thresholds. Everything but the
per-row ``searchsorted`` is one array operation over all replicates.

With every weight 1 this is exactly COCOeval's AP@[.50:.95] (area all, 100 detections)
and AR@100 (tested against pycocotools and faster-coco-eval).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

REC_THRS = np.linspace(0.0, 1.00, 101)


@dataclass
class MatchTable:
    """Per-detection match results of one group's images (area 'all', up to 100 detections per image)."""

    image_ids: np.ndarray
    """The evaluated image ids, in a fixed order (index = image index below)."""
    det_image: np.ndarray
    """Image index of every kept detection, in COCO's global score order."""
    det_tp: np.ndarray
    """T x D: detection matched at IoU threshold t (and not ignored)."""
    det_fp: np.ndarray
    """T x D: detection unmatched at threshold t (and not ignored)."""
    gt_count: np.ndarray
    """Non-ignored ground truths per image."""

    @property
    def n_images(self) -> int:
        return len(self.image_ids)


def match_table(gt: dict, detections: list[dict], image_ids=None) -> MatchTable:
    """Run COCO matching once; keep what accumulation needs (single category datasets and more)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections) if detections else COCO()
        if not detections:
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(image_ids if image_ids is not None else [im["id"] for im in gt["images"]])
        ev.evaluate()
    p = ev.params
    if len(p.catIds) != 1:
        raise ValueError(f"bootstrap AP needs a single-category dataset (got {len(p.catIds)} categories)")
    ids = np.asarray(p.imgIds)
    index = {i: k for k, i in enumerate(ids)}
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    scores, tp, fp, img = [], [], [], []
    gt_count = np.zeros(n_img)
    for k, _ in enumerate(p.catIds):
        for i in range(n_img):
            e = ev.evalImgs[k * n_area * n_img + 0 * n_img + i]  # area 'all'
            if e is None:
                continue
            order = np.argsort(-np.asarray(e["dtScores"]), kind="mergesort")[: p.maxDets[-1]]
            dtm = np.asarray(e["dtMatches"])[:, order] if len(order) else np.zeros((len(p.iouThrs), 0))
            dtig = np.asarray(e["dtIgnore"])[:, order] if len(order) else np.zeros((len(p.iouThrs), 0), bool)
            scores.append(np.asarray(e["dtScores"])[order])
            tp.append((dtm > 0) & ~dtig)
            fp.append((dtm == 0) & ~dtig)
            img.append(np.full(len(order), index[e["image_id"]]))
            gt_count[index[e["image_id"]]] += int((np.asarray(e["gtIgnore"]) == 0).sum())
    if scores:
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")  # COCO's global order
        tp_all, fp_all, img_all = np.concatenate(tp, 1)[:, order], np.concatenate(fp, 1)[:, order], np.concatenate(img)[order]
    else:
        tp_all = fp_all = np.zeros((len(p.iouThrs), 0), bool)
        img_all = np.zeros(0, int)
    return MatchTable(ids, img_all, tp_all, fp_all, gt_count)


def weighted_ap_ar(table: MatchTable, weights: np.ndarray, max_elements: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """AP@[.50:.95] and AR@100 for each row of image weights (R x n_images), in chunks of rows."""
    weights = np.atleast_2d(weights).astype(np.float64)
    t, d = table.det_tp.shape
    chunk = max(1, max_elements // max(1, t * d))
    parts = [_weighted_chunk(table, weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _weighted_chunk(table: MatchTable, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = weights.shape[0]
    n_gt = weights @ table.gt_count  # R
    if table.det_image.size == 0:
        return np.where(n_gt > 0, 0.0, np.nan), np.where(n_gt > 0, 0.0, np.nan)
    w = weights[:, table.det_image]  # R x D
    tp = np.cumsum(w[:, None, :] * table.det_tp[None], axis=2)  # R x T x D
    fp = np.cumsum(w[:, None, :] * table.det_fp[None], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / n_gt[:, None, None]
        precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]  # COCO's interpolation
    t = table.det_tp.shape[0]
    ap, ar = np.full(r, np.nan), np.full(r, np.nan)
    for i in range(r):
        if n_gt[i] == 0:
            continue  # COCO: undefined (-1)
        total = 0.0
        for j in range(t):
            idx = np.searchsorted(recall[i, j], REC_THRS, side="left")
            total += envelope[i, j][idx[idx < recall.shape[2]]].sum()  # thresholds beyond the last recall: 0
        ap[i] = total / (t * len(REC_THRS))
        ar[i] = recall[i, :, -1].mean()
    return ap, ar


def resample_weights(n_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial image counts: each row is one bootstrap draw of n_images images."""
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=replicates).astype(np.float64)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_gap(male: dict, female: dict, replicates: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """CIs of each condition's AP/AR per group and gap, and of paired differences between conditions.

    ``male`` and ``female`` map a condition name (e.g. 'clean', 'adversarial', 'trial 3') to a list
    of :class:`MatchTable` (one per seed's run, or one) on that group's images. All tables of a
    group must hold the same images: one draw of image weights per replicate is shared by every
    condition and run (a paired bootstrap), and a condition's value is the mean over its runs.
    """
    rng = np.random.default_rng(seed)
    values = {}  # (cond, group) -> (AP R-array, AR R-array, AP point, AR point)
    for group, tables in (("male", male), ("female", female)):
        ref = next(iter(tables.values()))[0]
        for cond, runs in tables.items():
            for t in runs:
                if not np.array_equal(t.image_ids, ref.image_ids):
                    raise ValueError(f"{cond} was evaluated on other {group} images than {next(iter(tables))}")
        w = resample_weights(ref.n_images, replicates, rng)
        ones = np.ones((1, ref.n_images))
        for cond, runs in tables.items():
            draws = [weighted_ap_ar(t, w) for t in runs]
            points = [weighted_ap_ar(t, ones) for t in runs]
            values[(cond, group)] = (np.mean([d[0] for d in draws], 0), np.mean([d[1] for d in draws], 0),
                                     float(np.mean([p[0][0] for p in points])), float(np.mean([p[1][0] for p in points])))
    out = {"replicates": replicates, "level": level, "conditions": {}, "differences": {}}
    samples = {}
    for cond in male:
        entry = {"runs": len(male[cond])}
        for k, name in ((0, "AP"), (1, "AR")):
            m, f = values[(cond, "male")], values[(cond, "female")]
            entry[f"{name}_male"] = {"value": m[2 + k], "ci": percentile_ci(m[k], level)}
            entry[f"{name}_female"] = {"value": f[2 + k], "ci": percentile_ci(f[k], level)}
            entry[f"{name}_gap"] = {"value": m[2 + k] - f[2 + k], "ci": percentile_ci(m[k] - f[k], level)}
            samples[(cond, f"{name}_gap")] = m[k] - f[k]
        out["conditions"][cond] = entry
    for a in male:
        for b in male:
            if a == b:
                continue
            d = {}
            for name in ("AP_gap", "AR_gap"):
                diff = samples[(a, name)] - samples[(b, name)]
                point = out["conditions"][a][name]["value"] - out["conditions"][b][name]["value"]
                greater = float(np.mean(diff > 0))
                d[name] = {"value": point, "ci": percentile_ci(diff, level), "p_greater": greater,
                           "p_two_sided": min(1.0, 2 * min(greater, 1 - greater))}
            out["differences"][f"{a} - {b}"] = d
    return out


def holm(p_values: dict) -> dict:
    """Holm-Bonferroni adjusted p-values (family-wise error) for a dict name -> p."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m, running, out = len(items), 0.0, {}
    for i, (name, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out
