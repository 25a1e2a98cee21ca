"""Bootstrap confidence intervals over images for COCO AP and AR, matching run once.

COCO matching (which detection matches which ground truth, per IoU threshold) does not
depend on which images are drawn, so it is computed once per (ground truth, detections)
with pycocotools' ``evaluate()``. A bootstrap replicate only re-weights images (how often
each is drawn), and COCO's accumulation with image weights is: sort all detections by
score once, weighted cumulative true and false positives, weighted ground-truth count,
the precision envelope, precision at the 101 recall thresholds, all evaluated at the true
positives only and as array operations over all replicates (one ``searchsorted`` for all rows).

Seeds: :func:`bootstrap_gap` is hierarchical (images shared by every condition, seeds drawn
within each condition; see :func:`seed_scale` for the two corrections it needs).

With every weight 1 this is exactly COCOeval's AP@[.50:.95] (area all, 100 detections)
and AR@100 (tested against pycocotools and faster-coco-eval).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from analysis.plan import components
from faap.metrics import AP, AR, METRICS

REC_THRS = np.linspace(0.0, 1.00, 101)
REPORTED = ("AP_male", "AP_female", "AP_gap", "AP_mean", "AR_male", "AR_female", "AR_gap")
"""Registry metrics each condition gets an interval of, by the registry's formulas. The bootstrap's own
choice, not a copy of the registry: its maths reproduces COCO's AP@[.50:.95] and AR@100 only
(``faap.metrics.AP``/``AR``), so a metric reading any other stat cannot be bootstrapped here."""
COMPARED = ("AP_gap", "AR_gap")
"""Registry metrics (among REPORTED) whose paired differences between conditions are bootstrapped."""


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
    chunk = max(1, max_elements // max(1, table.det_image.size))
    parts = [_weighted_chunk(table, weights[i:i + chunk]) for i in range(0, len(weights), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _weighted_chunk(table: MatchTable, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's accumulation with image weights, evaluated at the true positives only.

    Recall rises only at a true positive, and precision rises only there too, so the first
    position reaching a recall threshold and the best precision after it (COCO's envelope) are
    both found among the true positives: the cumulative weight of all counted detections is
    needed only at those positions. Exact, and far smaller than R x T x D arrays.
    """
    n_gt = weights @ table.gt_count  # R
    ap, ar = np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    ok = n_gt > 0  # COCO: undefined (-1) without ground truth
    if not ok.any() or table.det_image.size == 0:
        ap[ok] = ar[ok] = 0.0
        return ap, ar
    w, n_gt = weights[ok][:, table.det_image], n_gt[ok]  # R x D: each detection's weight
    counted = table.det_tp | table.det_fp  # T x D: not ignored
    shared = np.cumsum(w, axis=1) if counted.all() else None
    n_t = table.det_tp.shape[0]
    precision_sum, recall_sum = np.zeros(len(w)), np.zeros(len(w))
    for t in range(n_t):
        pos = np.flatnonzero(table.det_tp[t])
        if pos.size == 0:
            continue  # no true positive: precision 0 at every threshold, recall 0
        total = (shared if shared is not None else np.cumsum(w * counted[t], axis=1))[:, pos]
        tp = np.cumsum(w[:, pos], axis=1)
        recall = tp / n_gt[:, None]
        precision = tp / (total + np.spacing(1))
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # COCO's interpolation
        precision_sum += _precision_at_thresholds(recall[:, None], envelope[:, None]).sum((1, 2))
        recall_sum += recall[:, -1]
    ap[ok], ar[ok] = precision_sum / (n_t * len(REC_THRS)), recall_sum / n_t
    return ap, ar


def _precision_at_thresholds(recall: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """COCO's interpolated precision at the 101 recall thresholds, for every (replicate, IoU) row at once.

    Each row's recall is non-decreasing in [0, 1]; shifting row k by 2k makes the flattened
    array sorted, so one ``searchsorted`` answers every row (thresholds beyond a row's last
    recall get precision 0, as in COCOeval).
    """
    rows, d = recall.shape[0] * recall.shape[1], recall.shape[2]
    offset = 2.0 * np.arange(rows)[:, None]
    flat = (recall.reshape(rows, d) + offset).ravel()
    idx = np.searchsorted(flat, (REC_THRS[None, :] + offset).ravel(), side="left").reshape(rows, len(REC_THRS))
    idx -= (d * np.arange(rows))[:, None]
    inside = idx < d
    values = np.take_along_axis(envelope.reshape(rows, d), np.minimum(idx, d - 1), axis=1)
    return np.where(inside, values, 0.0).reshape(recall.shape[0], recall.shape[1], len(REC_THRS))


def resample_weights(n_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial image counts: each row is one bootstrap draw of n_images images."""
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=replicates).astype(np.float64)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def seed_draws(n_runs: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """R x n weights of the seed part: 1/n plus centred Gaussian multipliers / n (a wild bootstrap of the
    runs; each row sums to 1).

    Trap: drawing n runs with replacement gives a deviation with few distinct values (2 seeds: -d, 0, +d
    with probabilities 1/4, 1/2, 1/4), whose 95% percentile interval spans sqrt(2) standard deviations,
    not 1.96. Scaled to the t-interval's variance (:func:`seed_scale`), 2-seed intervals covered 91% of
    null studies and 3-seed ones 93%. Gaussian multipliers make the seed part normal given the runs, so
    the scaled percentile interval is the t-interval at any seed count (tests/test_calibration.py).
    """
    eps = rng.standard_normal((replicates, n_runs))
    return (1.0 + eps - eps.mean(1, keepdims=True)) / n_runs


def seed_variance(per_run: np.ndarray, points: np.ndarray) -> float:
    """Between-seed variance of one run's value, its own run-by-image noise taken out (0 with one run).

    Trap: each run's value also holds its own run-by-image noise, which the image draws already carry;
    counted twice it made 95% intervals cover 99% (tests/test_calibration.py). The noise of one run's
    value is estimated from the image draws (one run's variance minus the run mean's variance, times
    n / (n - 1)) and taken out of the spread between runs (``per_run``: n x R values under shared image
    draws; ``points``: each run's value on the images as they are)."""
    n = per_run.shape[0]
    if n < 2 or per_run.shape[1] < 2:  # one run, or one replicate: no spread to measure
        return 0.0
    noise = max(0.0, float(np.nanvar(per_run, 1, ddof=1).mean() - np.nanvar(per_run.mean(0), ddof=1))) * n / (n - 1)
    return max(0.0, float(points.var(ddof=1)) - noise)


def widening(seed_parts: list[tuple[float, int]], image_var: float, level: float = 0.95) -> float:
    """The factor on the seed parts' variance that makes the whole interval a t-interval.

    ``seed_parts``: (variance of a mean over seeds, number of seeds) of each condition in the estimate (one
    for a condition's value, two for a difference); ``image_var``: the variance the image draws give that
    estimate. Degrees of freedom by Welch-Satterthwaite (n - 1 when one condition's seeds dominate, many
    when the images do); the percentile interval of a normal draw then needs variance
    ``(t / z)^2 * total`` of which the images already give ``image_var``.
    """
    from scipy import stats

    seed = sum(v for v, _ in seed_parts)
    denom = sum(v ** 2 / (n - 1) for v, n in seed_parts if n > 1 and v > 0)
    if seed <= 0 or denom <= 0:
        return 0.0
    df = (seed + image_var) ** 2 / denom
    t_over_z = stats.t.ppf(0.5 + level / 2, df) / stats.norm.ppf(0.5 + level / 2)
    return (t_over_z ** 2 * (seed + image_var) - image_var) / seed


def seed_scale(per_run: np.ndarray, points: np.ndarray, seed_weights: np.ndarray, level: float = 0.95,
               factor: float | None = None) -> float:
    """Scale of the seed draws' deviation so that it carries the between-seed variance, as a t-interval.

    ``factor``: the :func:`widening` to apply (a difference's, from both conditions' seeds); by default
    this condition's alone (its value's interval)."""
    n = per_run.shape[0]
    if n < 2:
        return 0.0
    seed_var = seed_variance(per_run, points) / n
    deviation = np.einsum("rn,nr->r", seed_weights, per_run) - per_run.mean(0)
    if seed_var == 0.0 or not np.nanstd(deviation) > 0:
        return 0.0
    if factor is None:
        factor = widening([(seed_var, n)], float(np.nanvar(per_run.mean(0))), level)
    return float(np.sqrt(max(factor, 0.0) * seed_var) / np.nanstd(deviation))


def hierarchical(per_run: np.ndarray, seed_weights: np.ndarray, scale: float) -> np.ndarray:
    """Combine image-resampled values of each run (n x R) with a seed draw (R x n) per replicate.

    The drawn seeds' deviation from the all-run mean is multiplied by ``scale``
    (:func:`seed_scale`); with ``scale`` 0 this is the image-only bootstrap of the mean.
    """
    mean = per_run.mean(0)
    drawn = np.einsum("rn,nr->r", seed_weights, per_run)
    return mean + scale * (drawn - mean)


def p_two_sided(diff: np.ndarray) -> float:
    """Bootstrap p-value of 'no difference': ties count half, so identical conditions give 1."""
    diff = diff[np.isfinite(diff)]
    greater = float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))
    return min(1.0, 2 * min(greater, 1 - greater))


def _run_draws(tables: dict, weights: np.ndarray) -> dict:
    """cond -> (AP n x R, AR n x R, AP points n, AR points n) of each run on one group's image draws."""
    ones = np.ones((1, weights.shape[1]))
    out = {}
    for cond, runs in tables.items():
        draws = [weighted_ap_ar(t, weights) for t in runs]
        points = [weighted_ap_ar(t, ones) for t in runs]
        out[cond] = (np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws]),
                     np.array([p[0][0] for p in points]), np.array([p[1][0] for p in points]))
    return out


def _same_images(tables: dict, group: str) -> "MatchTable":
    ref_name = next(iter(tables))
    ref = tables[ref_name][0]
    for cond, runs in tables.items():
        for t in runs:
            if not np.array_equal(t.image_ids, ref.image_ids):
                raise ValueError(f"{cond} was evaluated on other {group} images than {ref_name}")
    return ref


def bootstrap_gap(male: dict, female: dict, replicates: int = 1000, seed: int = 0, level: float = 0.95,
                  seeds: bool = True, run_seeds: dict | None = None) -> dict:
    """CIs of each condition's AP/AR per group and gap, and of paired differences between conditions.

    ``male`` and ``female`` map a condition name (e.g. 'clean', a baseline variant, 'trial 3') to a list
    of :class:`MatchTable` (one per seed's run) on that group's images. The bootstrap is
    hierarchical: each replicate draws the images (one draw per group, shared by every condition:
    paired) and, per condition, its seeds (one draw shared by both groups, since a run's gap is
    its own male AP minus its own female AP). A condition's value is the mean over its runs.
    ``seeds=False`` resamples images only (seed noise left out of the intervals).

    ``run_seeds`` (condition -> the seed of each of its runs, in order): two conditions that ran the same
    seeds in the same order (two or more) are compared seed by seed, as a paired design: a seed draws
    the same initial weights and data order in both, so what the seed does to both cancels in each
    seed's difference, and the seed part of the interval is drawn on those differences
    (:func:`_paired_difference`).
    """
    rng = np.random.default_rng(seed)
    seed_w = {c: seed_draws(len(runs), replicates, rng) for c, runs in male.items()}
    runs, n_images = {}, {}
    for group, tables in (("male", male), ("female", female)):
        n_images[group] = _same_images(tables, group).n_images
        runs[group] = _run_draws(tables, resample_weights(n_images[group], replicates, rng))
    conds = {c: _Condition(runs["male"][c], runs["female"][c], seed_w[c]) for c in male}
    out = {"replicates": replicates, "level": level, "seeds_resampled": seeds, "images": n_images,
           "conditions": {}, "differences": {}}
    for cond, c in conds.items():
        draws = c.draws(c.scale(level) if seeds else 0.0)
        out["conditions"][cond] = {"runs": len(male[cond])}
        for name in REPORTED:
            compute = METRICS[name].compute
            out["conditions"][cond][name] = {"value": compute(c.points), "ci": percentile_ci(compute(draws), level)}
    images, run_seeds = sum(n_images.values()), run_seeds or {}
    for a in male:
        for b in male:
            if a == b:
                continue
            if len(run_seeds.get(a, ())) > 1 and run_seeds.get(a) == run_seeds.get(b):
                out["differences"][f"{a} - {b}"] = _paired_difference(out, conds[a], conds[b], a, b, level, seeds,
                                                                      images)
                continue
            d = out["differences"][f"{a} - {b}"] = _difference(out, conds[a], conds[b], a, b, level, seeds)
            d["AP_gap"]["components"] = components(*conds[a].gap, *conds[b].gap, images).to_dict()
    return out


class _Condition:
    """One condition's runs under the shared image draws: the mean over its runs per group and stat, the
    seed draws' deviation from it (unscaled), its values on the images as they are, and its AP gap's
    per-run draws and points (what the seed part is scaled by)."""

    def __init__(self, m: tuple, f: tuple, seed_w: np.ndarray):
        groups = (("male", m), ("female", f))
        self.mean = {g: {AP: ap.mean(0), AR: ar.mean(0)} for g, (ap, ar, _, _) in groups}
        self.dev = {g: {AP: hierarchical(ap, seed_w, 1.0) - ap.mean(0), AR: hierarchical(ar, seed_w, 1.0) - ar.mean(0)}
                    for g, (ap, ar, _, _) in groups}
        self.points = {g: {AP: float(ap_pt.mean()), AR: float(ar_pt.mean())} for g, (_, _, ap_pt, ar_pt) in groups}
        self.run_draws = {g: {AP: ap, AR: ar} for g, (ap, ar, _, _) in groups}  # n x R each
        self.run_points = {g: {AP: ap_pt, AR: ar_pt} for g, (_, _, ap_pt, ar_pt) in groups}
        self.gap, self.seed_w, self.n = (m[0] - f[0], m[2] - f[2]), seed_w, m[0].shape[0]

    def seed_var(self) -> float:
        return seed_variance(*self.gap) / self.n

    def scale(self, level: float, factor: float | None = None) -> float:
        return seed_scale(*self.gap, self.seed_w, level, factor)

    def draws(self, k: float) -> dict:
        """{group: {stat: R draws}} with the seed part scaled by ``k``."""
        return {g: {s: self.mean[g][s] + k * self.dev[g][s] for s in self.mean[g]} for g in self.mean}


def _difference(out: dict, a: "_Condition", b: "_Condition", na: str, nb: str, level: float, seeds: bool) -> dict:
    """Paired difference a - b. The seed parts are widened for the difference itself (Welch degrees of
    freedom from both conditions' seeds against the difference's own image variance): with shared images
    the image noise cancels in a difference, and each condition's own widening, made against its larger
    image variance, gave too many degrees of freedom. With very few seeds it still under-covers a little
    (measured in docs/reports.md, ``scripts/calibration_paired.py``)."""
    factor = widening([(a.seed_var(), a.n), (b.seed_var(), b.n)],
                      float(np.nanvar(a.gap[0].mean(0) - b.gap[0].mean(0))), level)
    ka, kb = (a.scale(level, factor), b.scale(level, factor)) if seeds else (0.0, 0.0)
    da, db = a.draws(ka), b.draws(kb)
    return {name: _entry(out, na, nb, name, METRICS[name].compute(da) - METRICS[name].compute(db), level)
            for name in COMPARED}


def _entry(out: dict, na: str, nb: str, name: str, diff: np.ndarray, level: float) -> dict:
    """One metric's difference na - nb: the point (difference of the two conditions' values), the percentile
    interval and half-width, the bootstrap p and the seed counts, from the R draws of the difference."""
    lo, hi = percentile_ci(diff, level)
    return {"value": out["conditions"][na][name]["value"] - out["conditions"][nb][name]["value"], "ci": (lo, hi),
            "half_width": (hi - lo) / 2, "p_two_sided": p_two_sided(diff),
            "runs": (out["conditions"][na]["runs"], out["conditions"][nb]["runs"])}


def _paired_difference(out: dict, a: "_Condition", b: "_Condition", na: str, nb: str, level: float, seeds: bool,
                       images: int) -> dict:
    """a - b for runs paired by seed: each seed's difference is one 'run' of the difference (n x R under the
    shared image draws), and the seed part is drawn on those (a paired t with n - 1 degrees of freedom when
    seeds dominate). Its plan components are the differences' own (the second condition's are zero)."""
    d = {}
    for name in COMPARED:
        compute = METRICS[name].compute
        per_run = compute(a.run_draws) - compute(b.run_draws)
        points = compute(a.run_points) - compute(b.run_points)
        k = seed_scale(per_run, points, a.seed_w, level) if seeds else 0.0
        d[name] = {**_entry(out, na, nb, name, hierarchical(per_run, a.seed_w, k), level), "paired_seeds": True}
        if name == "AP_gap":
            zeros = np.zeros_like(per_run)
            d[name]["components"] = components(per_run, points, zeros, np.zeros_like(points), images).to_dict()
    return d


def holm(p_values: dict) -> dict:
    """Holm-Bonferroni adjusted p-values (family-wise error) for a dict name -> p."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m, running, out = len(items), 0.0, {}
    for i, (name, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out
