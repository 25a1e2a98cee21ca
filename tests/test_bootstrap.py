"""The vectorised image bootstrap reproduces COCOeval and a naive bootstrap."""

import time

import numpy as np
import pytest

from analysis.bootstrap import bootstrap_gap, match_table, resample_weights, weighted_ap_ar
from faap.evaluate import STAT_NAMES, coco_stats
from test_evaluate import _random_case


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_equal_cocoeval(seed):
    gt, dets = _random_case(seed, 40)
    table = match_table(gt, dets)
    ap, ar = weighted_ap_ar(table, np.ones((1, table.n_images)))
    ref = coco_stats(gt, dets)
    assert ap[0] == pytest.approx(ref[STAT_NAMES[0]], abs=1e-12)
    assert ar[0] == pytest.approx(ref[STAT_NAMES[8]], abs=1e-12)


def _subset(gt, dets, ids):
    """The dataset made of the drawn images (duplicates get new ids), for the naive bootstrap."""
    images, anns, out = [], [], []
    by_img = {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    dets_by = {}
    for d in dets:
        dets_by.setdefault(d["image_id"], []).append(d)
    for new_id, old in enumerate(ids, start=1):
        im = next(i for i in gt["images"] if i["id"] == old)
        images.append({**im, "id": new_id})
        anns += [{**a, "id": len(anns) + k + 1, "image_id": new_id} for k, a in enumerate(by_img.get(old, []))]
        out += [{**d, "image_id": new_id} for d in dets_by.get(old, [])]
    return {**gt, "images": images, "annotations": anns}, out


def test_matches_naive_bootstrap_and_is_fast():
    gt, dets = _random_case(4, 30)
    table = match_table(gt, dets)
    rng = np.random.default_rng(0)
    w = resample_weights(table.n_images, 12, rng)
    fast_ap, fast_ar = weighted_ap_ar(table, w)
    for row, ap, ar in zip(w, fast_ap, fast_ar):
        ids = np.repeat(table.image_ids, row.astype(int))
        sub_gt, sub_dets = _subset(gt, dets, ids)
        ref = coco_stats(sub_gt, sub_dets, backend="pycocotools")
        assert ap == pytest.approx(ref[STAT_NAMES[0]], abs=1e-9)
        assert ar == pytest.approx(ref[STAT_NAMES[8]], abs=1e-9)
    # 1,000 replicates cost a few plain evaluations, not 1,000.
    t0 = time.perf_counter()
    coco_stats(gt, dets, backend="pycocotools")
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    weighted_ap_ar(table, resample_weights(table.n_images, 1000, rng))
    many = time.perf_counter() - t0
    print(f"one pycocotools evaluation {one * 1000:.1f} ms; 1000 bootstrap replicates {many * 1000:.1f} ms")


def test_paired_bootstrap_of_identical_conditions_is_zero():
    male_gt, male_dets = _random_case(5, 30)
    fem_gt, fem_dets = _random_case(6, 30)
    m, f = match_table(male_gt, male_dets), match_table(fem_gt, fem_dets)
    out = bootstrap_gap({"clean": [m], "same": [m]}, {"clean": [f], "same": [f]}, replicates=200)
    diff = out["differences"]["same - clean"]["AP_gap"]
    assert diff["value"] == 0 and diff["ci"] == (0.0, 0.0)
    assert diff["p_two_sided"] == 1.0  # no evidence of a difference (ties count half; was 0 before)
    gap = out["conditions"]["clean"]["AP_gap"]
    assert gap["ci"][0] <= gap["value"] <= gap["ci"][1]
    assert gap["value"] == pytest.approx(coco_stats(male_gt, male_dets)[STAT_NAMES[0]]
                                         - coco_stats(fem_gt, fem_dets)[STAT_NAMES[0]], abs=1e-12)


def test_bootstrapped_metrics_are_the_registry_formulas():
    from analysis.bootstrap import COMPARED, REPORTED
    from faap.evaluate import summarize

    male_gt, male_dets = _random_case(5, 30)
    fem_gt, fem_dets = _random_case(6, 30)
    out = bootstrap_gap({"clean": [match_table(male_gt, male_dets)]}, {"clean": [match_table(fem_gt, fem_dets)]},
                        replicates=20)
    expected = summarize({"male": coco_stats(male_gt, male_dets), "female": coco_stats(fem_gt, fem_dets)})
    assert set(COMPARED) <= set(REPORTED) <= set(expected)  # registry metrics, by name
    for name in REPORTED:
        assert out["conditions"]["clean"][name]["value"] == pytest.approx(expected[name], abs=1e-9), name


def test_holm():
    from analysis.bootstrap import holm

    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_seed_statistics():
    from analysis.seeds import probability_of_improvement, seed_stats

    s = seed_stats([0.1, 0.2, 0.3, 0.4])
    assert s["mean"] == pytest.approx(0.25) and s["iqm"] == pytest.approx(0.25)
    assert s["ci"][0] < 0.25 < s["ci"][1]
    assert np.isnan(seed_stats([0.3])["ci"][0])
    # A = {0.1, 0.2} vs B = {0.15, 0.3}, lower is better: pairs won 1, 1, 0, 1 -> 3/4.
    assert probability_of_improvement([0.1, 0.2], [0.15, 0.3]) == pytest.approx(0.75)


def test_seed_resampling_widens_intervals():
    """Two seeds per condition: the hierarchical interval holds the seeds' spread, the image-only one does not."""
    gt, dets_a = _random_case(5, 30)
    _, dets_b = _random_case(9, 30)  # another 'seed': other detections on the same images
    fem_gt, fem_dets = _random_case(6, 30)
    a, b, f = match_table(gt, dets_a), match_table(gt, dets_b), match_table(fem_gt, fem_dets)
    male, female = {"x": [a, b], "y": [a, b]}, {"x": [f, f], "y": [f, f]}
    seeded = bootstrap_gap(male, female, replicates=400)
    images_only = bootstrap_gap(male, female, replicates=400, seeds=False)
    d = seeded["differences"]["x - y"]["AP_gap"]
    assert d["value"] == 0 and d["ci"][0] < 0 < d["ci"][1] and d["p_two_sided"] > 0.5  # seeds drawn per condition
    width = {k: np.subtract(*r["conditions"]["x"]["AP_gap"]["ci"][::-1]) for k, r in
             (("seeded", seeded), ("images", images_only))}
    assert width["seeded"] > width["images"] > 0
    assert seeded["conditions"]["x"]["runs"] == 2 and seeded["images"] == {"male": 30, "female": 30}


def test_seed_scale_gives_a_t_interval_for_pure_seed_shifts_and_nothing_for_image_noise():
    from scipy import stats

    from analysis.bootstrap import seed_draws, seed_scale

    rng = np.random.default_rng(0)
    w = seed_draws(3, 4000, rng)
    image = np.zeros(4000)  # no image noise: the interval is the seeds' t-interval
    shifts = np.array([-0.2, 0.0, 0.4])  # pure seed effects: no run-by-image noise
    per_run = image[None] + shifts[:, None]
    k = seed_scale(per_run, shifts, w)
    deviation = k * (np.einsum("rn,nr->r", w, per_run) - per_run.mean(0))
    t_sd = stats.t.ppf(0.975, 2) / stats.norm.ppf(0.975) * shifts.std(ddof=1) / np.sqrt(3)
    assert deviation.std() == pytest.approx(t_sd, rel=1e-9)
    assert seed_scale(per_run[:1], shifts[:1], seed_draws(1, 10, rng)) == 0.0  # one run: no seed noise to draw
    # Runs that differ only by their own image noise (same expected value): nothing between seeds.
    noisy = rng.normal(0, 1, 4000)[None] + rng.normal(0, 0.5, (3, 4000))
    assert seed_scale(noisy, np.zeros(3), w) == 0.0


def test_two_seed_part_is_a_t_interval_in_its_percentiles_not_only_its_spread():
    """With 2 runs, resampling with replacement gives a 3-valued deviation whose 95% percentiles sit at
    sqrt(2) standard deviations; the Gaussian multipliers of seed_draws give the t-interval's half-width."""
    from scipy import stats

    from analysis.bootstrap import seed_draws, seed_scale

    rng = np.random.default_rng(1)
    w = seed_draws(2, 20000, rng)
    assert np.allclose(w.sum(1), 1.0)
    shifts = np.array([-0.1, 0.3])
    per_run = np.zeros(20000)[None] + shifts[:, None]
    deviation = seed_scale(per_run, shifts, w) * (np.einsum("rn,nr->r", w, per_run) - per_run.mean(0))
    lo, hi = np.percentile(deviation, [2.5, 97.5])
    t_half = stats.t.ppf(0.975, 1) * shifts.std(ddof=1) / np.sqrt(2)
    assert (hi - lo) / 2 == pytest.approx(t_half, rel=0.03)
