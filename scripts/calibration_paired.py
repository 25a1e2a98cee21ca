"""Coverage of the hierarchical bootstrap's 95% interval on strongly paired null studies, by seed count.

Same simulation as tests/test_calibration.py (40 images per group, simulated match tables, 200
replicates), with a small condition-by-image effect (sd 0.05): the two conditions differ little image by
image, so a difference rests almost wholly on the seeds. Prints one line per seed count; about 40 s a
line on one CPU thread. Usage: python scripts/calibration_paired.py [STUDIES]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from analysis.bootstrap import bootstrap_gap  # noqa: E402
from test_calibration import N_IMAGES, _table  # noqa: E402


def study(rng, seeds: int, cond_sd: float = 0.05, seed_sd: float = 0.35) -> tuple[dict, dict]:
    male, female = {}, {}
    for group, store in (("male", male), ("female", female)):
        gts = rng.integers(1, 4, N_IMAGES)
        image = rng.normal(0.5 if group == "male" else 0.0, 1.0, N_IMAGES)
        for cond in ("a", "b"):
            cond_image = rng.normal(0.0, cond_sd, N_IMAGES)
            store[cond] = [_table(rng, image + cond_image + rng.normal(0.0, seed_sd), gts) for _ in range(seeds)]
    return male, female


def main(studies: int = 300) -> None:
    for seeds in (2, 3, 5):
        rng, covered = np.random.default_rng(7), []
        for k in range(studies):
            lo, hi = bootstrap_gap(*study(rng, seeds), replicates=200, seed=k)["differences"]["a - b"]["AP_gap"]["ci"]
            covered.append(lo <= 0 <= hi)
        print(f"{seeds} seeds per condition: the 95% interval covers 0 in {np.mean(covered):.3f} of {studies} "
              "strongly paired null studies", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
