"""How many seeds and test images would a study need to resolve a change of a given size?

The hierarchical bootstrap (:mod:`analysis.bootstrap`) already measures what this needs. A run's
value on the study's images is ``shared image effect + seed effect + run-by-image noise``:

- ``image``: the part of a paired difference that every run shares (which images were drawn);
  it shrinks as 1 / images;
- ``noise``: the part of one run's value that is its own on these images (a seed moves some
  images and not others); it shrinks as 1 / images and averages out over seeds;
- ``seed``: the between-seed variance of one run's value, whatever the images.

For a difference A - B with ``k_a`` and ``k_b`` seeds on ``f`` times the study's images::

    V = seed_a / k_a + seed_b / k_b + (image + noise_a / k_a + noise_b / k_b) / f

and the 95% half-width is ``t * sqrt(V)``, ``t`` with Welch-Satterthwaite degrees of freedom for
the seed parts (the same t the bootstrap's seed part is widened to). The estimates come from the
image draws of each run (``per_run``: runs x replicates, all runs on the same draws) and each run's
value on the images as they are (``points``), as :func:`analysis.bootstrap.seed_scale` splits them.
Checked against simulated studies in ``tests/test_plan.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

MAX_SEEDS = 1000
MAX_IMAGE_FACTOR = 1000.0


@dataclass(frozen=True)
class Components:
    """Variance components of one paired difference A - B, at the study's images."""

    seed_a: float
    seed_b: float
    noise_a: float
    noise_b: float
    image: float
    runs_a: int
    runs_b: int
    images: int
    """Test images of the study (both groups)."""

    def to_dict(self) -> dict:
        """JSON-safe: an unknown seed variance (one run) is None, not NaN."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Components":
        return cls(**{k: float("nan") if v is None else v for k, v in d.items()})


def _noise(per_run: np.ndarray) -> float:
    """Run-by-image variance of one run's value (0 with one run: it cannot be told from the shared part)."""
    n = per_run.shape[0]
    if n < 2:
        return 0.0
    own = float(np.nanvar(per_run, axis=1, ddof=1).mean() - np.nanvar(per_run.mean(0), ddof=1))
    return max(0.0, own) * n / (n - 1)


def _seed(points: np.ndarray, noise: float) -> float:
    return max(0.0, float(np.var(points, ddof=1)) - noise) if len(points) > 1 else float("nan")


def components(per_run_a: np.ndarray, points_a: np.ndarray, per_run_b: np.ndarray, points_b: np.ndarray,
               images: int) -> Components:
    """The components of A - B from each condition's runs under the same image draws."""
    noise_a, noise_b = _noise(per_run_a), _noise(per_run_b)
    shared = float(np.nanvar(per_run_a.mean(0) - per_run_b.mean(0), ddof=1))
    image = max(0.0, shared - noise_a / len(points_a) - noise_b / len(points_b))
    return Components(_seed(points_a, noise_a), _seed(points_b, noise_b), noise_a, noise_b, image,
                      len(points_a), len(points_b), images)


def variance(c: Components, seeds_a: int, seeds_b: int, factor: float = 1.0) -> float:
    """Variance of the difference with these seeds and ``factor`` times the study's images."""
    return (c.seed_a / seeds_a + c.seed_b / seeds_b
            + (c.image + c.noise_a / seeds_a + c.noise_b / seeds_b) / factor)


def half_width(c: Components, seeds_a: int, seeds_b: int, factor: float = 1.0, level: float = 0.95) -> float:
    """95% half-width: a t quantile whose degrees of freedom come from the seed parts (Welch-Satterthwaite)."""
    from scipy import stats

    v = variance(c, seeds_a, seeds_b, factor)
    parts = [(c.seed_a / seeds_a, seeds_a), (c.seed_b / seeds_b, seeds_b)]
    denom = sum(s ** 2 / (k - 1) for s, k in parts if k > 1 and s > 0)
    df = v ** 2 / denom if denom > 0 else math.inf
    q = stats.norm.ppf(0.5 + level / 2) if math.isinf(df) else stats.t.ppf(0.5 + level / 2, df)
    return float(q * math.sqrt(max(v, 0.0)))


def seeds_needed(c: Components, target: float, level: float = 0.95) -> int | None:
    """Seeds per condition (both the same) at the study's images for a half-width of at most ``target``;
    None when no number up to :data:`MAX_SEEDS` reaches it (the shared image part alone is too wide)."""
    if not _known(c):
        return None
    for k in range(2, MAX_SEEDS + 1):
        if half_width(c, k, k, 1.0, level) <= target:
            return k
    return None


def images_needed(c: Components, target: float, level: float = 0.95) -> int | None:
    """Test images (both groups, in the study's proportion) at the study's seeds for a half-width of at
    most ``target``; None when the seed parts alone are wider (no number of images reaches it)."""
    if not _known(c):
        return None
    if half_width(c, c.runs_a, c.runs_b, MAX_IMAGE_FACTOR, level) > target:
        return None
    lo, hi = 1e-3, MAX_IMAGE_FACTOR  # half-width falls as the factor grows: bisect on it
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if half_width(c, c.runs_a, c.runs_b, mid, level) > target else (lo, mid)
    return int(math.ceil(hi * c.images))


def _known(c: Components) -> bool:
    """Seed variance needs at least two seeds per condition."""
    return c.runs_a >= 2 and c.runs_b >= 2 and np.isfinite(c.seed_a) and np.isfinite(c.seed_b)


def plan(c: Components, target: float, level: float = 0.95, measured: float | None = None) -> dict:
    """What report.json and the report's plan line carry.

    ``measured``: the half-width the bootstrap gave this difference. The model's half-widths are then
    scaled by measured / model (at the study's size), so the plan starts from the interval the report
    shows and the model only says how it shrinks (its percentile interval is a little wider than the
    model's t quantile: the seed part is a scale mixture of normals)."""
    model = half_width(c, c.runs_a, c.runs_b, 1.0, level) if _known(c) else None
    ratio = measured / model if measured and model else 1.0
    return {"target": target, "half_width_now": measured if measured and model else model,
            "model_half_width_now": model, "seeds_needed": seeds_needed(c, target / ratio, level),
            "images_needed": images_needed(c, target / ratio, level), "components": c.to_dict()}
