"""Measurements behind the three failure hypotheses of the InfoNCE variant (domain.md).

Computed from a run's saved checkpoint (its selected epoch) on the first ``n_images``
validation images of each group:

1. *No semantic relation between positives*: mean cosine similarity of pooled decoder
   features (mean over queries) between two colour-augmented views of the same image
   (what SimCLR positives are), between images of the same group, and across groups.
2. *Objective not tied to the goal*: across trials, seeds and epochs, the rank correlation
   between the InfoNCE loss drop (epoch 0 minus epoch e) and the AP-gap change (epoch e minus
   the clean detector); plus the matched-score gap per epoch (from ``metrics.jsonl``).
3. *Collapse*: effective rank (exp of the entropy of the normalised singular values) and
   mean per-dimension variance of the pooled features, before (clean images) and after
   (perturbed images); uniformity and cross-group alignment of the projections with the
   head at initialisation and after training.

Also: how far the perturbation moves each group's features (relative L2 change).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from faap.augment import color_augment
from faap.data.loader import GenderDetection, collate
from faap.data.transforms import build_transforms
from faap.generator import PerturbationGenerator, build_generator, perturb
from faap.variants import get_variant

# Verdict rules (stated in the report next to every verdict).
H1_VIEW_MARGIN = 0.05
H1_SAME_MARGIN = 0.01
H3_RANK_DROP = 0.10
H3_RANK_STABLE = 0.03
H3_UNIFORMITY_RISE = 0.10


def _mean_offdiag(sim: torch.Tensor) -> float:
    n = sim.shape[0]
    return float((sim.sum() - sim.diagonal().sum()) / max(1, n * n - n))


def cosine_summary(a: torch.Tensor, b: torch.Tensor, va: torch.Tensor, vb: torch.Tensor) -> dict:
    """Mean cosine similarity: two views of one image, same group (a, b separately), across groups."""
    a, b, va, vb = (F.normalize(t, dim=-1) for t in (a, b, va, vb))
    return {"two_views": float(torch.cat([(a * va).sum(-1), (b * vb).sum(-1)]).mean()),
            "same_group": (_mean_offdiag(a @ a.T) + _mean_offdiag(b @ b.T)) / 2,
            "cross_group": float((a @ b.T).mean())}


def effective_rank(x: torch.Tensor) -> float:
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||z_i - z_j||^2) over distinct pairs (Wang & Isola); lower = more uniform."""
    d = torch.pdist(F.normalize(z, dim=-1)).pow(2)
    return float(torch.log(torch.exp(-t * d).mean()))


def alignment(z_f: torch.Tensor, z_m: torch.Tensor) -> float:
    """Mean squared distance between every cross-group (female, male) projection pair."""
    z_f, z_m = F.normalize(z_f, dim=-1), F.normalize(z_m, dim=-1)
    return float(torch.cdist(z_f, z_m).pow(2).mean())


@torch.no_grad()
def feature_diagnostics(run_dir: str, epoch: int | None = None, n_images: int = 64, device: str = "cpu") -> dict:
    from faap.runtime import open_run

    cfg, state, groups, detector = open_run(run_dir, epoch, "val", device)
    tf = build_transforms(False, cfg.train_scales, cfg.max_size, cfg.eval_size)
    batches = {}
    for name, gs in groups.items():
        ds = GenderDetection({name: gs}, tf, detector.category_to_label)
        batches[name] = collate([ds[i] for i in range(min(n_images, len(ds)))])
    # The untrained modules, rebuilt exactly as the trainer built them from the seed.
    torch.manual_seed(cfg.seed)
    PerturbationGenerator()
    variant_init = get_variant(cfg.variant)(cfg, detector.hidden_dim)
    generator = build_generator(cfg.channels_last, device, state["generator"]).eval()
    variant = get_variant(cfg.variant)(cfg, detector.hidden_dim)
    variant.load_state_dict(state["variant"])
    torch.manual_seed(0)
    feats = {}
    for name, batch in batches.items():
        x, mask = batch["pixel_values"].to(device), batch["pixel_mask"].to(device)
        x_adv, _ = perturb(generator, x, mask, state["eps"], cfg.perturb_padding)
        feats[name] = {"clean": detector(x, mask).features, "perturbed": detector(x_adv, mask).features,
                       "view_a": detector(color_augment(x, "medium"), mask).features,
                       "view_b": detector(color_augment(x, "medium"), mask).features}
    pooled = {g: {k: v.mean(1) for k, v in f.items()} for g, f in feats.items()}
    out = {"run": run_dir, "epoch": state["epoch"], "n_images": {g: len(b["groups"]) for g, b in batches.items()}}
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
    if hasattr(variant, "proj_head"):
        z0 = {g: variant_init.proj_head(feats[g]["clean"]) for g in feats}
        z1 = {g: variant.proj_head(feats[g]["perturbed"]) for g in feats}
        out["h1_projections_after"] = cosine_summary(z1["female"], z1["male"],
                                                     variant.proj_head(feats["female"]["view_a"]),
                                                     variant.proj_head(feats["male"]["view_a"]))
        out["h3"].update({
            "uniformity_before": uniformity(torch.cat([z0["female"], z0["male"]])),
            "uniformity_after": uniformity(torch.cat([z1["female"], z1["male"]])),
            "alignment_before": alignment(z0["female"], z0["male"]),
            "alignment_after": alignment(z1["female"], z1["male"])})
    return out


def h1_verdict(d: dict) -> tuple[str, str]:
    s = d["h1_features_before"]
    text = (f"pooled decoder features of the clean detector: two views of one image {s['two_views']:.3f}, "
            f"two images of the same group {s['same_group']:.3f}, a woman's and a man's image {s['cross_group']:.3f}")
    if s["two_views"] - s["cross_group"] > H1_VIEW_MARGIN and s["cross_group"] <= s["same_group"] + H1_SAME_MARGIN:
        return "supported", text + (" - cross-gender 'positives' are far less alike than real views and no more alike "
                                    "than any two images")
    if s["two_views"] - s["cross_group"] <= H1_SAME_MARGIN:
        return "not supported", text + " - cross-gender pairs are as alike as two views of one image"
    return "inconclusive", text


def h3_verdict(d: dict) -> tuple[str, str]:
    h = d["h3"]
    drop = 1 - h["effective_rank_after"] / h["effective_rank_before"]
    text = (f"effective rank {h['effective_rank_before']:.1f} -> {h['effective_rank_after']:.1f} of {h['feature_dim']} "
            f"({-100 * drop:+.1f}%), per-dimension variance {h['dim_variance_before']:.4f} -> {h['dim_variance_after']:.4f}")
    rise = None
    if "uniformity_before" in h:
        rise = h["uniformity_after"] - h["uniformity_before"]
        text += (f"; projection uniformity {h['uniformity_before']:.3f} -> {h['uniformity_after']:.3f}, cross-group "
                 f"alignment {h['alignment_before']:.3f} -> {h['alignment_after']:.3f}")
    if drop > H3_RANK_DROP:
        return "supported", text + " - the detector's features lose dimensions"
    if rise is not None and rise > H3_UNIFORMITY_RISE:
        where = " (in the projections only: the detector's features keep their rank)" if abs(drop) < H3_RANK_STABLE else ""
        return "supported", text + f" - the projections crowd together{where}"
    if abs(drop) < H3_RANK_STABLE and (rise is None or rise < H3_UNIFORMITY_RISE / 2):
        return "not supported", text
    return "inconclusive", text


def h2_points(epochs_frame, clean_gap: float):
    """(InfoNCE loss drop since epoch 0, AP-gap change vs clean) per (run, epoch >= 1)."""
    df = epochs_frame[epochs_frame["metric"].isin(["loss_infonce", "AP_gap"])]
    wide = df.pivot_table(index=["run", "epoch"], columns="metric", values="value").reset_index()
    if "loss_infonce" not in wide:
        return np.zeros((0, 2))
    first = wide[wide["epoch"] == 0].set_index("run")["loss_infonce"]
    wide = wide[wide["epoch"] >= 1].copy()
    wide["drop"] = wide["run"].map(first) - wide["loss_infonce"]
    wide["gap_change"] = wide["AP_gap"] - clean_gap
    return wide[["drop", "gap_change"]].dropna().to_numpy()


def h2_verdict(points: np.ndarray, replicates: int = 2000, seed: int = 0) -> tuple[str, str, dict]:
    from scipy.stats import spearmanr

    n = len(points)
    if n < 6:
        return "inconclusive", f"only {n} (run, epoch) points", {"n": n}
    rho = float(spearmanr(points[:, 0], points[:, 1]).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(replicates):
        idx = rng.integers(0, n, n)
        if np.ptp(points[idx, 0]) > 0 and np.ptp(points[idx, 1]) > 0:
            boots.append(spearmanr(points[idx, 0], points[idx, 1]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    stats = {"n": n, "rho": rho, "ci": (float(lo), float(hi))}
    text = (f"Spearman correlation between the InfoNCE loss drop and the AP-gap change over {n} (run, epoch) points: "
            f"{rho:+.2f}, 95% CI [{lo:+.2f}, {hi:+.2f}] (a loss tied to the goal would give a clearly negative value)")
    if hi < 0:
        return "not supported", text, stats
    return "supported", text, stats
