"""The seed/image plan (analysis/plan.py) against simulated studies with known variance components.

A run's value is the mean over images of ``image effect + condition-by-image effect + seed effect +
noise``. A pilot study's bootstrap draws give the components; the variance they predict for another
number of seeds and images must be the variance of the difference over many simulated studies of that
size, and the seed/image counts the plan gives must reach the half-width they were asked for.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.plan import Components, half_width, images_needed, plan, seeds_needed, variance

SD_IMAGE, SD_COND_IMAGE, SD_SEED, SD_NOISE = 1.0, 0.6, 0.12, 0.8


def _runs(rng, n_seeds: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image values (runs x images) of conditions A and B on the same images."""
    image = rng.normal(0, SD_IMAGE, n_images)
    out = []
    for _ in "ab":
        cond = rng.normal(0, SD_COND_IMAGE, n_images)
        seeds = rng.normal(0, SD_SEED, (n_seeds, 1))
        out.append(image + cond + seeds + rng.normal(0, SD_NOISE, (n_seeds, n_images)))
    return out[0], out[1]


def _true_variance(seeds: int, n_images: int) -> float:
    return 2 * SD_SEED ** 2 / seeds + (2 * SD_COND_IMAGE ** 2 + 2 * SD_NOISE ** 2 / seeds) / n_images


def _pilot(rng, n_seeds: int, n_images: int, replicates: int = 300):
    a, b = _runs(rng, n_seeds, n_images)
    draws = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=replicates) / n_images  # shared
    from analysis.plan import components

    return components(a @ draws.T, a.mean(1), b @ draws.T, b.mean(1), n_images)


def test_components_predict_the_variance_at_another_size():
    rng = np.random.default_rng(0)
    pilots = [_pilot(rng, 4, 60) for _ in range(300)]
    predicted = np.mean([variance(c, 10, 10, 2.0) for c in pilots])  # 10 seeds, 120 images
    empirical = np.var([(a.mean() - b.mean()) for a, b in (_runs(rng, 10, 120) for _ in range(3000))], ddof=1)
    print(f"variance of the difference at 10 seeds x 120 images: predicted {predicted:.5f} from 4-seed x 60-image "
          f"pilots, simulated {empirical:.5f}, true {_true_variance(10, 120):.5f}")
    assert predicted == pytest.approx(empirical, rel=0.12)
    mean = {k: np.mean([getattr(c, k) for c in pilots]) for k in ("seed_a", "noise_a", "image")}
    assert mean["seed_a"] == pytest.approx(SD_SEED ** 2, rel=0.25)  # clipped at 0: a little high
    assert mean["noise_a"] == pytest.approx(SD_NOISE ** 2 / 60, rel=0.1)
    assert mean["image"] == pytest.approx(2 * SD_COND_IMAGE ** 2 / 60, rel=0.15)


def _components(seed: float, noise: float, image: float, runs: int = 3, images: int = 600) -> Components:
    return Components(seed, seed, noise, noise, image, runs, runs, images)


def test_seeds_needed_is_the_smallest_count_that_reaches_the_target():
    c = _components(seed=4e-4, noise=1e-4, image=1e-5)
    k = seeds_needed(c, 0.01)
    assert k is not None and half_width(c, k, k) <= 0.01 < half_width(c, k - 1, k - 1)


def test_images_needed_reaches_the_target_and_none_when_seeds_dominate():
    c = _components(seed=1e-6, noise=2e-4, image=2e-4)
    n = images_needed(c, 0.01)
    assert n is not None and n > c.images
    assert half_width(c, 3, 3, n / c.images) <= 0.01 < half_width(c, 3, 3, (n - 2) / c.images)
    seeds_only = _components(seed=1e-3, noise=1e-6, image=1e-6)
    assert images_needed(seeds_only, 0.004) is None  # 3 seeds of that spread: no image count gets there
    assert seeds_needed(seeds_only, 0.004) > 3


def test_no_plan_without_two_seeds_per_condition():
    c = Components(float("nan"), 1e-4, 0.0, 1e-4, 1e-4, 1, 3, 600)
    out = plan(c, 0.004)
    assert out["seeds_needed"] is None and out["images_needed"] is None and out["half_width_now"] is None
    assert out["components"]["seed_a"] is None and Components.from_dict(out["components"]).runs_a == 1
    both = plan(Components(1e-4, 1e-4, 1e-7, 1e-7, 1e-7, 3, 3, 600), 0.004)
    assert math.isfinite(both["half_width_now"]) and both["seeds_needed"] > 3


def test_plan_starts_from_the_measured_half_width():
    c = Components(4e-4, 4e-4, 1e-4, 1e-4, 1e-5, 3, 3, 600)
    model = half_width(c, 3, 3)
    wider = plan(c, 0.01, measured=1.2 * model)
    assert wider["half_width_now"] == pytest.approx(1.2 * model) and wider["model_half_width_now"] == model
    k = wider["seeds_needed"]
    assert 1.2 * half_width(c, k, k) <= 0.01 < 1.2 * half_width(c, k - 1, k - 1)
    assert k >= plan(c, 0.01)["seeds_needed"]
