"""Measurements from saved checkpoints and per-epoch records, for the failure hypotheses that
variants declare (``Variant.hypotheses``; the rules and verdicts live with each variant).

:func:`feature_diagnostics` works on a run's saved checkpoint (its selected epoch) and the first
``n_images`` validation images of each group, with pooled decoder features (mean over queries):

- cosine similarity between two colour-augmented views of one image (what SimCLR positives
  are), between images of the same group, and across groups (clean, views, perturbed);
- effective rank (exp of the entropy of the normalised singular values) and mean per-dimension
  variance, before (clean images) and after (perturbed images);
- how far the perturbation moves each group's features (relative L2 change);
- whatever the run's variant measures on its own modules (``Variant.feature_measurements``).

The result is a :class:`FeatureDiagnostics`: the numbers above (report.json's ``diagnostics``) and, as an
attribute, the per-image pooled features behind them, from which the judges bootstrap over images.

The measurements themselves are :mod:`faap.measures` (variants use them too).
:func:`loss_vs_gap_points` relates a loss term's drop to the AP-gap change across runs and epochs
(from ``metrics.jsonl``), for ``faap.measures.rank_correlation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faap.augment import color_augment
from faap.data.loader import GenderDetection, collate
from faap.data.transforms import build_transforms
from faap.generator import perturb
from faap.measures import cosine_summary, effective_rank
from faap.rundir import RunDir
from faap.variants import get_variant


class FeatureDiagnostics(dict):
    """The measured numbers (a plain dict to report.json) with the per-image arrays behind them in
    :attr:`images`: ``{group: {name: array (n_images x dim)}}``, names 'clean', 'perturbed', 'view_a',
    'view_b' (pooled decoder features, rows in the same image order) plus the variant's own per-image
    measures (the ``images`` entry of its ``feature_measurements``). Trap: an attribute, not an item, so
    that report.json keeps the numbers only."""

    def __init__(self, numbers: dict, images: dict):
        super().__init__(numbers)
        self.images = images


VIEWS = ("clean", "perturbed", "view_a", "view_b")
"""The images a run's features are taken on: as loaded, perturbed by the run's G, and two colour-augmented
views (``color_augment`` 'medium', drawn after ``torch.manual_seed(0)``, in this order per group)."""


@dataclass
class RunFeatures:
    """Decoder features of a saved run's checkpoint on the first validation images of each group."""

    run: str
    epoch: int
    image_ids: dict
    """``{group: [image id per row]}``: two runs of one dataset see the same images in the same rows."""
    features: dict
    """``{group: {view: tensor B x Q x D}}``, the views asked for (:data:`VIEWS`); a group with no validation
    image is absent here and in :attr:`image_ids`."""
    variant: object
    """The run's variant module with its trained weights (e.g. InfoNCE's ``proj_head``)."""
    variant_init: object
    """The same variant as the trainer initialised it from the run's seed."""


@torch.no_grad()
def run_features(run_dir: str, epoch: int | None = None, n_images: int = 64, device: str = "cpu",
                 views: tuple = VIEWS) -> RunFeatures:
    """The one extraction of per-image features from a run (the diagnostics and the feature space use it).

    ``epoch`` None: the epoch the run selected on val (the last saved one for a run that has not finished).
    Trap: the checkpoint folder also keeps the last epoch, which is not the selected one in general."""
    from faap.runtime import initial_modules, open_run

    if epoch is None:
        epoch = RunDir(run_dir).selected_epoch()
    cfg, state, groups, detector = open_run(run_dir, epoch, "val", device)
    tf = build_transforms(False, cfg.train_scales, cfg.max_size, cfg.eval_size)
    batches = {}
    for name, gs in groups.items():
        ds = GenderDetection({name: gs}, tf, detector.category_to_label)
        if min(n_images, len(ds)):  # a group without images is left out (its callers say so)
            batches[name] = collate([ds[i] for i in range(min(n_images, len(ds)))])
    # The untrained modules, rebuilt as the trainer built them from the seed; G then gets its trained weights.
    generator, variant_init = initial_modules(cfg, detector.hidden_dim, device)
    generator.load_state_dict(state["generator"])
    generator.eval()
    variant = get_variant(cfg.variant)(cfg, detector.hidden_dim).to(device)
    variant.load_state_dict(state["variant"])
    variant.eval(), variant_init.eval()  # measured as evaluated: a projection head's dropout off
    torch.manual_seed(0)
    feats = {}
    for name, batch in batches.items():
        x, mask = batch["pixel_values"].to(device), batch["pixel_mask"].to(device)
        images = {"clean": lambda: x, "perturbed": lambda: perturb(generator, x, mask, state["eps"],
                                                                   cfg.perturb_padding)[0],
                  "view_a": lambda: color_augment(x, "medium"), "view_b": lambda: color_augment(x, "medium")}
        feats[name] = {v: detector(images[v](), mask).features for v in VIEWS if v in views}
    ids = {g: [int(t["image_id"]) for t in b["targets"]] for g, b in batches.items()}
    return RunFeatures(run_dir, state["epoch"], ids, feats, variant, variant_init)


def feature_diagnostics(run_dir: str, epoch: int | None = None, n_images: int = 64,
                        device: str = "cpu", extracted: RunFeatures | None = None) -> FeatureDiagnostics:
    """``extracted``: the run's features with every view of :data:`VIEWS`, when the caller holds them already
    (the report extracts each run once for its diagnostics and its feature space)."""
    extracted = extracted or run_features(run_dir, epoch, n_images, device)
    feats = extracted.features
    pooled = {g: {k: v.mean(1) for k, v in f.items()} for g, f in feats.items()}
    out = {"run": run_dir, "epoch": extracted.epoch, "n_images": {g: len(i) for g, i in extracted.image_ids.items()}}
    f, m = pooled["female"], pooled["male"]
    out["h1_features_before"] = cosine_summary(f["clean"], m["clean"], f["view_a"], m["view_a"])
    out["h1_features_views"] = cosine_summary(f["view_a"], m["view_a"], f["view_b"], m["view_b"])
    out["h1_features_after"] = cosine_summary(f["perturbed"], m["perturbed"], f["view_a"], m["view_a"])
    before = torch.cat([f["clean"], m["clean"]])
    after = torch.cat([f["perturbed"], m["perturbed"]])
    out["h3"] = {"effective_rank_before": effective_rank(before), "effective_rank_after": effective_rank(after),
                 "dim_variance_before": float(before.var(0).mean()), "dim_variance_after": float(after.var(0).mean()),
                 "feature_dim": int(before.shape[1])}
    out["feature_shift"] = {g: float((pooled[g]["perturbed"] - pooled[g]["clean"]).norm(dim=-1).mean()
                                     / pooled[g]["clean"].norm(dim=-1).mean()) for g in pooled}
    with torch.no_grad():
        own = dict(extracted.variant.feature_measurements(extracted.variant_init, feats))
    images = {g: {k: v.cpu().numpy() for k, v in p.items()} for g, p in pooled.items()}
    for name, per_group in own.pop("images", {}).items():
        for g, v in per_group.items():
            images[g][name] = v.detach().cpu().numpy()
    for key, value in own.items():  # merged one level deep
        out[key] = {**out[key], **value} if isinstance(out.get(key), dict) else value
    return FeatureDiagnostics(out, images)


def loss_vs_gap_points(epochs_frame, loss: str, clean_gap: float) -> np.ndarray:
    """(drop of ``loss`` since epoch 0, AP-gap change vs clean, run code) per (run, epoch >= 1).

    The third column numbers the runs (0, 1, ...): a run's epochs are not independent points, and
    :func:`faap.measures.rank_correlation` resamples whole runs."""
    df = epochs_frame[epochs_frame["metric"].isin([loss, "AP_gap"])]
    wide = df.pivot_table(index=["run", "epoch"], columns="metric", values="value").reset_index()
    if loss not in wide:
        return np.zeros((0, 3))
    first = wide[wide["epoch"] == 0].set_index("run")[loss]
    wide = wide[wide["epoch"] >= 1].copy()
    wide["drop"] = wide["run"].map(first) - wide[loss]
    wide["gap_change"] = wide["AP_gap"] - clean_gap
    wide = wide.dropna(subset=["drop", "gap_change"])
    wide["run_code"] = wide["run"].astype("category").cat.codes
    return wide[["drop", "gap_change", "run_code"]].to_numpy(dtype=float)

