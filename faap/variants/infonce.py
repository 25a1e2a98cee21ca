"""Cross-gender InfoNCE: pull female and male projections together (the variant under study),
and its three failure hypotheses."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from faap.augment import STRENGTHS, color_augment
from faap.config import TrainConfig, bounded
from faap.evidence import Evidence, Figure
from faap.heads import ProjectionHead
from faap.losses import cross_gender_infonce
from faap.measures import (alignment, bootstrap_ci, cosine_pairs, cosine_summary, effective_rank, gaussian_pairs,
                           interval_text, pair_mean, rank_correlation, uniformity)
from faap.variants.base import Finding, Hypothesis, StepState, Variant


@dataclass
class InfoNCEConfig(TrainConfig):
    # A changed default keeps the bounds TrainConfig declares for the field.
    optimizer: str = "adamw"
    """AdamW over G and the projection head."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    temperature: float = bounded(0.07, gt=0)
    """InfoNCE temperature tau."""
    asymmetric_f: float = bounded(1.5, ge=0)
    """Weight a_f of the female->male direction."""
    asymmetric_m: float = bounded(0.5, ge=0)
    """Weight a_m of the male->female direction."""
    lambda_infonce: float = bounded(1.0, ge=0)
    """Weight of the InfoNCE term in G's loss."""
    aug_strength: str = bounded("medium", choices=tuple(STRENGTHS))
    """Colour augmentation of perturbed images: none, weak, medium, strong."""
    proj_dim: int = bounded(128, gt=0)
    """Output size of the projection head."""
    proj_hidden: int = bounded(256, gt=0)
    """Hidden size of the projection head."""
    skip_incomplete_batches: bool = True
    """Skip a step whose batch lacks a group (no G step, as the original); False takes a detection-only step."""


# ---- what the report says about InfoNCE: its three failure hypotheses (domain.md) -----------------
# Rules (stated in the report next to every verdict); every one reads 95% bootstrap intervals.
H1_VIEW_MARGIN = 0.05
H1_SAME_MARGIN = 0.01
H2_WEAK_TIE = -0.3
"""A Spearman correlation above this (between loss drop and gap change) is at most a weak tie."""
H3_RANK_DROP = 0.10
H3_RANK_STABLE = 0.03
H3_UNIFORMITY_RISE = 0.10
REPLICATES = 1000
"""Bootstrap resamples of the validation images behind H1's and H3's intervals."""


def _indices(images: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(len(images["female"]["clean"])), np.arange(len(images["male"]["clean"]))


def h1_measure(images: dict, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """H1's two margins on the clean detector's pooled features (a view: ``view_a``) with 95% intervals, each
    group's images resampled: two views minus cross-gender pairs, cross-gender minus same-group pairs."""
    f, m = images["female"], images["male"]
    pairs = cosine_pairs(f["clean"], m["clean"], f["view_a"], m["view_a"])
    margins = {"views_minus_cross": lambda s: s["two_views"] - s["cross_group"],
               "cross_minus_same": lambda s: s["cross_group"] - s["same_group"]}
    out = {}
    for key, margin in margins.items():  # one seed: both margins on the same resamples
        out[key], out[f"{key}_ci"] = bootstrap_ci(lambda i, j: margin(pairs.summary(i, j)), *_indices(images),
                                                  replicates=replicates, seed=seed)
    return out


H1_NAMES = {"views_minus_cross": "two views minus cross-gender", "cross_minus_same": "cross-gender minus same group",
            "both": "both margins"}


def h1_verdict(d: dict, m: dict) -> tuple[str, str, dict]:
    """``d``: the features (``Evidence.features``); ``m``: :func:`h1_measure`. Returns the verdict, its text
    and stats naming the margin that carried it (``carried_by``)."""
    s, v_ci, c_ci = d["h1_features_before"], m["views_minus_cross_ci"], m["cross_minus_same_ci"]
    text = (f"pooled decoder features of the clean detector: two views of one image {s['two_views']:.3f}, "
            f"two images of the same group {s['same_group']:.3f}, a woman's and a man's image {s['cross_group']:.3f}; "
            f"two views minus cross-gender {interval_text(m['views_minus_cross'], v_ci)}, cross-gender minus same "
            f"group {interval_text(m['cross_minus_same'], c_ci)}")
    if v_ci is None or c_ci is None:
        verdict, carried, why = "inconclusive", "views_minus_cross", "too few images for an interval"
    elif v_ci[1] <= H1_SAME_MARGIN:
        verdict, carried, why = "not supported", "views_minus_cross", "cross-gender pairs are as alike as two views"
    elif c_ci[0] > H1_SAME_MARGIN:
        verdict, carried, why = "not supported", "cross_minus_same", "cross-gender pairs are more alike than two " \
            "same-group images"
    elif v_ci[0] > H1_VIEW_MARGIN and c_ci[1] <= H1_SAME_MARGIN:
        verdict, carried, why = "supported", "both", "cross-gender 'positives' are far less alike than real views " \
            "and no more alike than any two images"
    else:
        carried = "cross_minus_same" if v_ci[0] > H1_VIEW_MARGIN else "views_minus_cross"
        verdict, why = "inconclusive", "its interval reaches across its threshold"
    return verdict, f"{text} - {why} (verdict carried by {H1_NAMES[carried]})", {**m, "carried_by": carried}


def h2_verdict(points, replicates: int = 2000, seed: int = 0) -> tuple[str, str, dict]:
    """Not supported when the interval lies below zero (the loss's drop goes with a smaller gap);
    supported only when it also rules out any tie stronger than :data:`H2_WEAK_TIE`; otherwise,
    a wide interval, inconclusive."""
    stats = rank_correlation(points, replicates, seed)
    if "rho" not in stats:
        return "inconclusive", f"only {stats['n']} (run, epoch) points from {stats['runs']} runs", stats
    (lo, hi), n = stats["ci"], stats["n"]
    text = (f"Spearman correlation between the InfoNCE loss drop and the AP-gap change over {n} (run, epoch) points "
            f"of {stats['runs']} runs: {stats['rho']:+.2f}, 95% CI [{lo:+.2f}, {hi:+.2f}] (runs resampled; a loss tied "
            "to the goal would give a clearly negative value)")
    if hi < 0:
        return "not supported", text, stats
    if lo > H2_WEAK_TIE:
        return "supported", text + f" - any tie is weaker than {H2_WEAK_TIE:+.1f}", stats
    return "inconclusive", text + f" - the interval admits a tie stronger than {H2_WEAK_TIE:+.1f}", stats


def h3_measure(images: dict, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """H3's measurements with 95% intervals, each group's images resampled (the same draw before and after):
    the effective rank's relative drop (clean -> perturbed pooled features) and, where the variant kept its
    projections, the rise of their uniformity (initial head on clean -> trained head on perturbed)."""
    f, m = images["female"], images["male"]
    i0, j0 = _indices(images)
    rows = lambda i, j: np.concatenate([i, len(i0) + j])  # noqa: E731 - resampled rows of the stacked groups
    before, after = (np.concatenate([f[k], m[k]]) for k in ("clean", "perturbed"))
    out = {}
    out["rank_drop"], out["rank_drop_ci"] = bootstrap_ci(
        lambda i, j: 1 - effective_rank(after[rows(i, j)]) / effective_rank(before[rows(i, j)]), i0, j0,
        replicates=replicates, seed=seed, centred=True)  # duplicated images lower a resample's rank
    if "projection_before" in f:
        g0, g1 = (gaussian_pairs(np.concatenate([f[k], m[k]])) for k in ("projection_before", "projection_after"))
        out["uniformity_rise"], out["uniformity_rise_ci"] = bootstrap_ci(
            lambda i, j: np.log(pair_mean(g1, rows(i, j))) - np.log(pair_mean(g0, rows(i, j))), i0, j0,
            replicates=replicates, seed=seed)
    return out


H3_NAMES = {"rank_drop": "the effective rank's drop", "uniformity_rise": "the projections' uniformity rise"}
H3_NULL = {"rank_drop": H3_RANK_STABLE, "uniformity_rise": H3_UNIFORMITY_RISE / 2}
"""Each H3 measurement's bound: an interval wholly below it rules the collapse out on that measurement."""


def h3_verdict(d: dict, m: dict) -> tuple[str, str, dict]:
    """``d``: the features; ``m``: :func:`h3_measure`. Supported when either interval lies wholly beyond its
    threshold; not supported when every measured interval lies wholly below its :data:`H3_NULL` bound;
    otherwise inconclusive. ``carried_by`` names the measurement(s) behind the verdict."""
    h, drop_ci, rise_ci = d["h3"], m["rank_drop_ci"], m.get("uniformity_rise_ci")
    text = (f"effective rank {h['effective_rank_before']:.1f} -> {h['effective_rank_after']:.1f} of {h['feature_dim']} "
            f"(relative drop {interval_text(m['rank_drop'], drop_ci, '+.1%')}), per-dimension variance "
            f"{h['dim_variance_before']:.4f} -> {h['dim_variance_after']:.4f}")
    if "uniformity_before" in h:
        text += (f"; projection uniformity {h['uniformity_before']:.3f} -> {h['uniformity_after']:.3f} (rise "
                 f"{interval_text(m['uniformity_rise'], rise_ci)}), cross-group alignment {h['alignment_before']:.3f} "
                 f"-> {h['alignment_after']:.3f}")
    measured = {k: m[f"{k}_ci"] for k in H3_NAMES if k in m}
    if None in measured.values():
        verdict, carried, why = "inconclusive", [k for k, ci in measured.items() if ci is None], "too few images"
    elif drop_ci[0] > H3_RANK_DROP:
        verdict, carried, why = "supported", ["rank_drop"], "the detector's features lose dimensions"
    elif rise_ci is not None and rise_ci[0] > H3_UNIFORMITY_RISE:
        kept = " (the detector's features keep their rank)" if drop_ci[1] < H3_RANK_STABLE else ""
        verdict, carried, why = "supported", ["uniformity_rise"], f"the projections crowd together{kept}"
    else:
        carried = [k for k, ci in measured.items() if ci[1] >= H3_NULL[k]]
        verdict, why = ("inconclusive", "the interval reaches across its threshold") if carried else \
            ("not supported", "no interval reaches a loss of dimensions or a crowding")
        carried = carried or list(measured)
    names = " and ".join(H3_NAMES[k] for k in carried)
    return verdict, f"{text} - {why} (verdict carried by {names})", {**m, "carried_by": " and ".join(carried)}


def _where(evidence: Evidence, diag: dict) -> str:
    best = evidence.best
    return (f"{diag['n_images']['female']} female and {diag['n_images']['male']} male validation images resampled "
            f"({REPLICATES} draws), run {best.name} {os.path.basename(best.runs[0])}")


def _judge_h1(evidence: Evidence) -> Finding:
    diag = evidence.features()
    verdict, text, stats = h1_verdict(diag, h1_measure(evidence.image_features()))
    sims = {k: diag[f"h1_features_{k}"] for k in ("before", "after")}
    fig = Figure("bars", {k: {"two views": v["two_views"], "same group": v["same_group"],
                              "cross group": v["cross_group"]} for k, v in sims.items()},
                 "h1_similarity.png", "mean cosine similarity")
    return Finding(verdict, text, stats, figure=fig, where=_where(evidence, diag))


def _judge_h2(evidence: Evidence) -> Finding:
    pts = evidence.loss_vs_gap_points("loss_infonce")
    verdict, text, stats = h2_verdict(pts)
    fig = Figure("scatter", pts, "h2_loss_vs_gap.png", "val AP gap minus clean", "InfoNCE loss drop since epoch 0")
    return Finding(verdict, text, stats, fig)


def _judge_h3(evidence: Evidence) -> Finding:
    diag = evidence.features()
    verdict, text, stats = h3_verdict(diag, h3_measure(evidence.image_features()))
    return Finding(verdict, text, stats, where=_where(evidence, diag))


HYPOTHESES = (
    Hypothesis("h1", "No semantic relation between cross-gender positives",
               f"on 95% intervals: supported when real views are more than {H1_VIEW_MARGIN} more alike than "
               f"cross-gender pairs and those are at most {H1_SAME_MARGIN} more alike than two same-group images; not "
               f"supported when views are at most {H1_SAME_MARGIN} more alike than cross-gender pairs, or cross-gender "
               f"pairs more than {H1_SAME_MARGIN} more alike than same-group ones; otherwise inconclusive", _judge_h1),
    Hypothesis("h2", "Objective not tied to the goal", "not supported when the correlation's interval lies below "
               f"zero; supported when it excludes correlations below {H2_WEAK_TIE:+.1f} (at most a weak tie); otherwise "
               "inconclusive", _judge_h2),
    Hypothesis("h3", "Collapse", f"on 95% intervals: supported when the effective rank drops by more than "
               f"{H3_RANK_DROP:.0%} or the projections' uniformity rises by more than {H3_UNIFORMITY_RISE}; not supported "
               f"when the rank drops by less than {H3_RANK_STABLE:.0%} (or rises) and the uniformity rises by less than "
               f"{H3_UNIFORMITY_RISE / 2}; otherwise inconclusive", _judge_h3),
)


class InfoNCE(Variant):
    name = "infonce"
    Config = InfoNCEConfig
    original_checkpoint_key = "proj_head"
    reference = "adversarial"
    hypotheses = HYPOTHESES

    def __init__(self, cfg: InfoNCEConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = ProjectionHead(hidden_dim, cfg.proj_dim, cfg.proj_hidden)

    def g_parameters(self):
        return list(self.proj_head.parameters())

    def skips(self, n_female: int, n: int) -> bool:
        return self.cfg.skip_incomplete_batches and not 0 < n_female < n

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return color_augment(x, self.cfg.aug_strength)

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        z = self.proj_head(state.out.features)
        cfg = self.cfg
        return {"infonce": cross_gender_infonce(z[state.female], z[state.male], cfg.temperature,
                                                cfg.asymmetric_f, cfg.asymmetric_m)}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        return {**super().weight_dict(epoch), "infonce": self.cfg.lambda_infonce}

    def feature_measurements(self, initial: "InfoNCE", features: dict) -> dict:
        z0 = {g: initial.proj_head(f["clean"]) for g, f in features.items()}
        z1 = {g: self.proj_head(f["perturbed"]) for g, f in features.items()}
        views = {g: self.proj_head(f["view_a"]) for g, f in features.items()}
        return {"images": {"projection_before": z0, "projection_after": z1},  # per image, for H3's bootstrap
                "h1_projections_after": cosine_summary(z1["female"], z1["male"], views["female"], views["male"]),
                "h3": {"uniformity_before": uniformity(torch.cat([z0["female"], z0["male"]])),
                       "uniformity_after": uniformity(torch.cat([z1["female"], z1["male"]])),
                       "alignment_before": alignment(z0["female"], z0["male"]),
                       "alignment_after": alignment(z1["female"], z1["male"])}}
