"""Calibration of the paired, hierarchical bootstrap on simulated studies (no training).

A simulated study has two conditions evaluated on the same images, each with several
seeds. Every run's detections come from an image effect (shared by all runs: some images are
hard), a condition-by-image effect (the condition changes some images more than others), a
seed effect (shared by all images of one run) and noise. With no true difference the 95%
interval must cover zero about 95% of the time; the image-only bootstrap, which leaves the
seed effect out, must cover it less often.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis.bootstrap import MatchTable, bootstrap_gap

N_IMAGES = 40
SEEDS = 4


def _table(rng, image_logit: np.ndarray, gts: np.ndarray) -> MatchTable:
    """One run on one group: a detection per ground truth (a hit with prob. sigmoid(logit)) plus one false positive per image."""
    det_image, hit, score = [], [], []
    for i, (logit, n_gt) in enumerate(zip(image_logit, gts)):
        p = 1 / (1 + np.exp(-logit))
        hits = rng.random(n_gt) < p
        det_image += [i] * (n_gt + 1)
        hit += list(hits) + [False]
        score += list(rng.normal(np.where(hits, 1.0 + logit, 0.0), 0.5)) + [rng.normal(0.0, 0.5)]
    order = np.argsort(-np.asarray(score), kind="mergesort")
    tp = np.asarray(hit)[order][None]
    return MatchTable(np.arange(len(gts)), np.asarray(det_image)[order], tp, ~tp, gts.astype(float))


def _study(rng, difference: float, seed_sd: float, seeds: int = SEEDS) -> tuple[dict, dict]:
    """Match tables per group and condition ('a', 'b'); 'a' is better on female images by ``difference`` (logit)."""
    male, female = {}, {}
    for group, store in (("male", male), ("female", female)):
        gts = rng.integers(1, 4, N_IMAGES)
        image = rng.normal(0.5 if group == "male" else 0.0, 1.0, N_IMAGES)
        for cond in ("a", "b"):
            cond_image = rng.normal(0.0, 0.5, N_IMAGES)
            shift = -difference if (cond == "a" and group == "female") else 0.0
            store[cond] = [_table(rng, image + cond_image + rng.normal(0.0, seed_sd) - shift, gts)
                           for _ in range(seeds)]
    return male, female


def _intervals(n_studies: int, difference: float, seed_sd: float, seeds: bool, n_seeds: int = SEEDS) -> np.ndarray:
    rng = np.random.default_rng(12345)
    out = []
    for k in range(n_studies):
        male, female = _study(rng, difference, seed_sd, n_seeds)
        boot = bootstrap_gap(male, female, replicates=200, seed=k, seeds=seeds)
        d = boot["differences"]["a - b"]["AP_gap"]
        out.append((*d["ci"], d["value"]))
    return np.asarray(out)  # rows: low, high, point estimate


@pytest.fixture(scope="module")
def null_intervals():
    return {"hierarchical": _intervals(400, 0.0, 0.35, True), "images only": _intervals(200, 0.0, 0.35, False)}


def test_hierarchical_interval_covers_zero_95_percent_of_null_studies(null_intervals):
    ci = null_intervals["hierarchical"]
    coverage = np.mean((ci[:, 0] <= 0) & (ci[:, 1] >= 0))
    print(f"hierarchical bootstrap: 95% interval covers 0 in {coverage:.3f} of {len(ci)} null studies")
    assert 0.93 <= coverage <= 0.97


def test_three_seeds_per_condition_are_calibrated_too():
    """The seed part is drawn with Gaussian multipliers (analysis.bootstrap.seed_draws): resampling 3 runs
    with replacement gave a lumpy seed part and 93% coverage here; 2 seeds are documented, not claimed
    (about 91%: a seed variance from one degree of freedom is often estimated at zero)."""
    ci = _intervals(300, 0.0, 0.35, True, n_seeds=3)
    coverage = np.mean((ci[:, 0] <= 0) & (ci[:, 1] >= 0))
    print(f"hierarchical bootstrap, 3 seeds: 95% interval covers 0 in {coverage:.3f} of {len(ci)} null studies")
    assert 0.93 <= coverage <= 0.97


def test_image_only_interval_under_covers_with_seed_noise(null_intervals):
    ci = null_intervals["images only"]
    coverage = np.mean((ci[:, 0] <= 0) & (ci[:, 1] >= 0))
    print(f"image-only bootstrap: 95% interval covers 0 in {coverage:.3f} of {len(ci)} null studies")
    assert coverage < 0.9


def _mean_difference(shift: float, n_studies: int = 40) -> float:
    """Mean point estimate of the AP-gap difference b - a for a logit shift (no bootstrap)."""
    rng = np.random.default_rng(7)
    values = []
    for _ in range(n_studies):
        male, female = _study(rng, shift, 0.35)
        boot = bootstrap_gap(male, female, replicates=1, seed=0)
        values.append(boot["differences"]["b - a"]["AP_gap"]["value"])
    return float(np.mean(values))


def test_planted_difference_of_three_standard_errors_is_detected(null_intervals):
    se = float(null_intervals["hierarchical"][:, 2].std(ddof=1))  # the spread of the null studies' estimates
    shift = 3 * se / (_mean_difference(0.5) / 0.5)  # linear guess from the slope near zero ...
    shift *= 3 * se / _mean_difference(shift)  # ... corrected once: AP saturates
    planted = _intervals(120, shift, 0.35, True)
    detected = np.mean(planted[:, 1] < 0)  # 'a' has the smaller gap: a - b below zero
    print(f"planted difference {3 * se:.4f} (3 standard errors, logit shift {shift:.3f}; mean estimate "
          f"{-planted[:, 2].mean():.4f}): detected in {detected:.2f} of {len(planted)} studies")
    assert abs(-planted[:, 2].mean() - 3 * se) < 0.5 * se  # the planted size is what it says
    assert detected >= 0.6  # most of the time (a t-interval on 4 seeds at 3 standard errors: about 0.7)


def _paired_study(rng, seeds: int, shared_sd: float = 0.6, own_sd: float = 0.05) -> tuple[dict, dict]:
    """Two conditions run with the same seeds: a seed's effect on the gap (on the female images) is mostly
    shared by both (same initial weights and data order), with a little of its own per condition; no true
    difference."""
    shared = rng.normal(0.0, shared_sd, seeds)
    male, female = {}, {}
    for group, store in (("male", male), ("female", female)):
        gts = rng.integers(1, 4, N_IMAGES)
        image = rng.normal(0.5 if group == "male" else 0.0, 1.0, N_IMAGES)
        for cond in ("a", "b"):
            cond_image = rng.normal(0.0, 0.5, N_IMAGES)
            effect = (shared + rng.normal(0.0, own_sd, seeds)) if group == "female" else np.zeros(seeds)
            store[cond] = [_table(rng, image + cond_image + effect[i], gts) for i in range(seeds)]
    return male, female


def test_seed_paired_differences_are_calibrated_and_narrower():
    """Conditions that ran the same seeds are compared seed by seed (run_seeds): the null interval still
    covers 95%, and it is narrower than the unpaired one, which carries the shared seed effect twice."""
    rng, seeds = np.random.default_rng(2024), 4
    covered, widths = [], []
    for k in range(300):
        male, female = _paired_study(rng, seeds)
        paired = bootstrap_gap(male, female, replicates=200, seed=k, run_seeds={"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]})
        unpaired = bootstrap_gap(male, female, replicates=200, seed=k)
        d, u = paired["differences"]["a - b"]["AP_gap"], unpaired["differences"]["a - b"]["AP_gap"]
        assert d["paired_seeds"] and "paired_seeds" not in u and d["value"] == pytest.approx(u["value"])
        covered.append(d["ci"][0] <= 0 <= d["ci"][1])
        widths.append(d["half_width"] / u["half_width"])
    coverage = float(np.mean(covered))
    print(f"seed-paired bootstrap, {seeds} seeds: 95% interval covers 0 in {coverage:.3f} of 300 null studies; "
          f"median half-width {np.median(widths):.2f} of the unpaired one")
    # About 93.5% (600 studies each at 3 and 5 seeds, this simulation; docs/reports.md): the slight
    # under-coverage of seed variances estimated from few seeds, as in the unpaired case.
    assert 0.92 <= coverage <= 0.97
    assert np.median(widths) < 0.8
