"""Cross-gender InfoNCE: pull female and male projections together (the variant under study),
and its three failure hypotheses."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from faap.augment import STRENGTHS, color_augment
from faap.config import TrainConfig, bounded
from faap.evidence import Evidence, Figure
from faap.heads import ProjectionHead
from faap.losses import cross_gender_infonce
from faap.measures import alignment, cosine_summary, rank_correlation, uniformity
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
# Rules (stated in the report next to every verdict).
H1_VIEW_MARGIN = 0.05
H1_SAME_MARGIN = 0.01
H2_WEAK_TIE = -0.3
"""A Spearman correlation above this (between loss drop and gap change) is at most a weak tie."""
H3_RANK_DROP = 0.10
H3_RANK_STABLE = 0.03
H3_UNIFORMITY_RISE = 0.10


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


def _judge_h1(evidence: Evidence) -> Finding:
    diag = evidence.features()
    verdict, text = h1_verdict(diag)
    sims = {k: diag[f"h1_features_{k}"] for k in ("before", "after")}
    fig = Figure("bars", {k: {"two views": v["two_views"], "same group": v["same_group"],
                              "cross group": v["cross_group"]} for k, v in sims.items()},
                 "h1_similarity.png", "mean cosine similarity")
    best = evidence.best
    where = (f"{diag['n_images']['female']} female and {diag['n_images']['male']} male validation images, run "
             f"{best.name} {os.path.basename(best.runs[0])}")
    return Finding(verdict, text, figure=fig, where=where)


def _judge_h2(evidence: Evidence) -> Finding:
    pts = evidence.loss_vs_gap_points("loss_infonce")
    verdict, text, stats = h2_verdict(pts)
    fig = Figure("scatter", pts, "h2_loss_vs_gap.png", "val AP gap minus clean", "InfoNCE loss drop since epoch 0")
    return Finding(verdict, text, stats, fig)


def _judge_h3(evidence: Evidence) -> Finding:
    return Finding(*h3_verdict(evidence.features()))


HYPOTHESES = (
    Hypothesis("h1", "No semantic relation between cross-gender positives",
               f"supported when real views are more than {H1_VIEW_MARGIN} more alike than cross-gender pairs and those "
               "are no more alike than two same-group images", _judge_h1),
    Hypothesis("h2", "Objective not tied to the goal", "not supported when the correlation's interval lies below "
               f"zero; supported when it excludes correlations below {H2_WEAK_TIE:+.1f} (at most a weak tie); otherwise "
               "inconclusive", _judge_h2),
    Hypothesis("h3", "Collapse", f"supported when the effective rank drops by more than {H3_RANK_DROP:.0%} or the "
               f"projections' uniformity rises by more than {H3_UNIFORMITY_RISE}", _judge_h3),
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
        return {"h1_projections_after": cosine_summary(z1["female"], z1["male"], views["female"], views["male"]),
                "h3": {"uniformity_before": uniformity(torch.cat([z0["female"], z0["male"]])),
                       "uniformity_after": uniformity(torch.cat([z1["female"], z1["male"]])),
                       "alignment_before": alignment(z0["female"], z0["male"]),
                       "alignment_after": alignment(z1["female"], z1["male"])}}
