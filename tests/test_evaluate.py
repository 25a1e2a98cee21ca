"""COCO evaluation: faster-coco-eval gives pycocotools' numbers."""

import numpy as np
import pytest

from faap.evaluate import STAT_NAMES, coco_stats, summarize


def _random_case(seed, n_images=30):
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 160, "file_name": f"{i}.png"})
        for _ in range(rng.integers(1, 4)):
            w, h = rng.uniform(8, 120, 2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 160 - h)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, w, h], "area": w * h,
                         "iscrowd": 0})
            for _ in range(rng.integers(0, 3)):  # noisy detections of it, and a few false positives
                jitter = rng.normal(0, 6, 4)
                dets.append({"image_id": i, "category_id": 1, "bbox": list(np.abs([x, y, w, h] + jitter)),
                             "score": float(rng.uniform())})
        dets.append({"image_id": i, "category_id": 1, "bbox": [1.0, 1.0, 30.0, 30.0], "score": float(rng.uniform(0, 0.5))})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_equals_pycocotools(seed):
    gt, dets = _random_case(seed)
    fast = coco_stats(gt, dets, backend="faster")
    ref = coco_stats(gt, dets, backend="pycocotools")
    assert list(fast) == list(STAT_NAMES)
    for name in STAT_NAMES:
        if np.isnan(ref[name]):
            assert np.isnan(fast[name])
        else:
            assert fast[name] == pytest.approx(ref[name], abs=1e-12), name
    assert 0.05 < fast[STAT_NAMES[0]] < 0.95


def test_perfect_detections_and_summary():
    gt, _ = _random_case(3, 10)
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    stats = coco_stats(gt, dets)
    assert stats[STAT_NAMES[0]] == pytest.approx(1.0)
    s = summarize({"male": stats, "female": {**stats, STAT_NAMES[0]: 0.25, STAT_NAMES[8]: 0.5}})
    assert s["AP_gap"] == pytest.approx(0.75) and s["AR_gap"] == pytest.approx(0.5)
    assert coco_stats(gt, [])[STAT_NAMES[0]] == 0.0
