"""``faap demo``: the embedded default, end to end on one machine with no downloads.

Writes the synthetic benchmark (seed 0, the data the bundled demo detector was trained
on), trains the adversarial 7th baseline and the InfoNCE variant for a few short epochs
against the demo detector, and prints the per-epoch validation AP gap of each next to
the clean detector's. Re-running resumes (finished runs are only re-summarised).
"""

from __future__ import annotations

import os

from faap.config import read_config_file
from faap.data.synth import generate
from faap.trainer import Run
from faap.variants import make_config


def ensure_synthetic(root: str) -> str:
    if not os.path.isdir(os.path.join(root, "men_split")):
        print(f"writing the synthetic benchmark to {root}", flush=True)
        generate(root)
    return root


def run_demo(out: str = "runs/demo", epochs: int = 3, epoch_samples: int = 512, seed: int = 42) -> dict:
    data = ensure_synthetic(os.path.join(out, "data"))
    summaries, curves = {}, {}
    for variant in ("adversarial", "infonce"):
        values = read_config_file("synthetic")
        values.update(data=data, detector="demo", epochs=epochs, epoch_samples=epoch_samples, seed=seed)
        cfg = make_config(variant, values)
        print(f"\n== {variant}: {epochs} epochs x {epoch_samples} samples, seed {seed}", flush=True)
        run = Run(cfg, os.path.join(out, "runs", variant))
        summaries[variant] = run.fit(resume=True)
        curves[variant] = run.history()
    base = summaries["infonce"]["baseline"]
    print("\nval AP gap (male - female) per epoch; clean detector: "
          f"{base['val']['AP_gap']:+.4f} (AP male {base['val']['AP_male']:.4f}, female {base['val']['AP_female']:.4f})")
    print(f"{'epoch':>5s} " + " ".join(f"{v:>12s}" for v in curves))
    for e in range(epochs):
        print(f"{e:5d} " + " ".join(f"{c[e]['AP_gap']:+12.4f}" for c in curves.values()))
    for v, s in summaries.items():
        print(f"{v}: selected epoch {s['selected_epoch']} on val; test AP gap {s['test']['AP_gap']:+.4f} "
              f"(clean {s['baseline']['test']['AP_gap']:+.4f}), test AR gap {s['test']['AR_gap']:+.4f} "
              f"(clean {s['baseline']['test']['AR_gap']:+.4f})")
    print(f"\nrun folders: {os.path.join(out, 'runs')}")
    return summaries
