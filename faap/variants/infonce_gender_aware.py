"""The "3rd" InfoNCE of the original (train_faap_simclr_infonce_3rd.py): female anchors, male positives
weighted by how far a man's image-level score lies above the woman's, other women as negatives; G and the
set loss on the whole batch, at a fixed eps; the one-way Wasserstein on image-level top-k scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faap.augment import color_augment
from faap.config import bounded
from faap.evidence import Evidence
from faap.heads import ProjectionHead
from faap.losses import gender_aware_infonce, image_level_scores, one_way_wasserstein, score_weight_bias
from faap.measures import bootstrap_ci, cluster_bootstrap_ci, interval_text
from faap.variants.base import Finding, Hypothesis, StepState, Variant
from faap.variants.infonce import InfoNCEConfig


@dataclass
class InfonceGenderAwareConfig(InfoNCEConfig):
    # The standard InfoNCE's fields (temperature, asymmetric_f/m = the original's hard-coded 1.5/0.5,
    # lambda_infonce = its lambda_contrastive, aug_strength, proj_dim, AdamW 0.01) with the 3rd's defaults.
    # Shared fields the original changes: batch 8 and a fixed eps 0.10 (no schedule: start = peak = final);
    # lr_g 1e-4, grad_clip 0.1, epochs 24, beta 0.5 -> 0.6 and lambda_wass 0.2 equal the shared ones;
    # here lambda_wass weights the Wasserstein on image-level scores (see loss_terms).
    batch_size: int = 8
    eps_start: float = 0.10
    eps_peak: float = 0.10
    eps_final: float = 0.10
    score_weight_alpha: float = bounded(1.0, ge=0)
    """Strength of the score weighting: positives' logits get alpha * log w (0: unweighted)."""
    score_sharpness: float = bounded(5.0, ge=0)
    """Slope of w = 0.5 + sigmoid(slope * (s_m - s_f)) (hard-coded 5 in the original)."""
    proj_hidden: int = bounded(0, ge=0)
    """Hidden size of the projection head (0: the detector's hidden size, as the original)."""


# ---- failure hypotheses, from the original's Report/infonce_3rd_vs_wgan_7th_analysis.md, section 4.1 ----
# Rules read 95% bootstrap intervals over runs (one run: its epoch records, or no interval).
H2_OVERFIT_RISE, H2_STABLE, H2_MIN_EPOCHS = 0.005, 0.001, 3  # AP-gap rise best -> last epoch; epochs needed


def _judge_reversal(evidence: Evidence) -> Finding:
    recs = evidence.trial_epochs("image_score_gap")
    if recs.empty:
        return Finding("inconclusive", "no image_score_gap records")
    runs = evidence.per_run("image_score_gap")
    gap, ci = cluster_bootstrap_ci(np.mean, recs["value"].to_numpy(), recs["run"].to_numpy())
    weights = np.array([v.mean() for v in evidence.per_run("pos_weight").values()])
    text = (f"image-level score gap (male - female) per run: {', '.join(f'{v.mean():+.4f}' for v in runs.values())}; "
            f"over all {len(recs)} run-epoch records {interval_text(gap, ci, '+.4f')} ("
            + ("runs resampled" if len(runs) > 1 else "one run: its epochs resampled, the spread between seeds unmeasured")
            + f"); mean positive weight {weights.mean():.3f} (1 = no weighting)")
    stats = {"score_gap_mean": gap, "score_gap_ci": ci, "pos_weight_mean": float(weights.mean()), "n_runs": len(runs)}
    if ci is not None and ci[1] < 0:
        return Finding("supported", text + " - men score below women, so the weights damp the positives", stats)
    if ci is not None and ci[0] > 0:
        return Finding("not supported", text + " - men score above women, as the weighting assumes", stats)
    why = "the interval reaches both signs" if ci else "one record gives no interval"
    return Finding("inconclusive", f"{text} - {why}", stats)


def _judge_overfit(evidence: Evidence) -> Finding:
    runs = evidence.per_run("AP_gap")
    if not runs:
        return Finding("inconclusive", "no AP_gap records")
    rises, n_epochs = np.array([v[-1] - v.min() for v in runs.values()]), min(len(v) for v in runs.values())
    rise, ci = bootstrap_ci(np.median, rises)
    text = (f"val AP gap at the last epoch minus its best epoch, median over {len(rises)} runs: "
            f"{interval_text(rise, ci, '+.4f')} (runs resampled; shortest run {n_epochs} epochs)")
    stats = {"rise_median": rise, "rise_median_ci": ci, "n_runs": len(rises), "min_epochs": n_epochs}
    if n_epochs < H2_MIN_EPOCHS:
        return Finding("inconclusive", text + f" - fewer than {H2_MIN_EPOCHS} epochs", stats)
    if ci is None:
        return Finding("inconclusive", text + " - one run gives no interval", stats)
    if ci[0] > H2_OVERFIT_RISE:
        return Finding("supported", text + " - the gap grows again after its best epoch", stats)
    return Finding("not supported" if ci[1] < H2_STABLE else "inconclusive", text, stats)


HYPOTHESES = (
    Hypothesis("score_reversal", "Score-gap reversal turns the weighting around (\"score_gap (M-F) is negative "
               "(-0.007 ~ -0.014) ... the contrastive loss acts in the wrong direction\")",
               "on the 95% interval of the mean image-level score gap (male - female; runs resampled, or one run's "
               "epochs): supported when it lies wholly below 0, not supported when wholly above 0, otherwise "
               "inconclusive", _judge_reversal),
    Hypothesis("overfit", "Overfitting after the best epoch (\"performance falls after epoch 10 ... the projection "
               "head overfits the training set\")",
               f"on the 95% interval of the median rise of the val AP gap from its best to its last epoch (runs "
               f"resampled; one run gives none: inconclusive): supported when it lies wholly above {H2_OVERFIT_RISE}, "
               f"not supported when wholly below {H2_STABLE} (runs of at least {H2_MIN_EPOCHS} epochs), otherwise "
               "inconclusive", _judge_overfit),
)


class InfonceGenderAware(Variant):
    name = "infonce_gender_aware"
    Config = InfonceGenderAwareConfig
    label = "3rd (gender-aware InfoNCE)"
    reference = "adversarial"  # the 7th, which the original's analysis note compares it with
    hypotheses = HYPOTHESES
    whole_batch = True  # the original ran G and the set loss once on the whole batch

    def __init__(self, cfg: InfonceGenderAwareConfig, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = ProjectionHead(hidden_dim, cfg.proj_dim, cfg.proj_hidden or hidden_dim)

    def g_parameters(self):
        return list(self.proj_head.parameters())

    def skips(self, n_female: int, n: int) -> bool:
        # the original's `continue` (no step at all) needs two women and a man
        return self.cfg.skip_incomplete_batches and (n_female < 2 or n - n_female < 1)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return color_augment(x, self.cfg.aug_strength)

    def _scores(self, state: StepState) -> torch.Tensor:
        return image_level_scores(state.extras["class_probs"](state.out.logits), self.cfg.score_top_k)

    def before_generator_step(self, state: StepState) -> dict[str, float]:
        if state.out is None:  # bench's original-loop timing recomputes features for adversaries only
            return {}
        with torch.no_grad():  # logged only (the hypotheses read them); pos_weight: w^alpha, on exp(sim/t)
            s = self._scores(state)
            s_f, s_m = s[state.female], s[state.male]
            w = (self.cfg.score_weight_alpha * score_weight_bias(s_f, s_m, self.cfg.score_sharpness)).exp().mean()
        return {"image_score_f": s_f.mean().item(), "image_score_m": s_m.mean().item(),
                "image_score_gap": (s_m.mean() - s_f.mean()).item(), "pos_weight": w.item()}

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        cfg, s, z = self.cfg, self._scores(state), self.proj_head(state.out.features)
        fem, male = state.female, state.male
        return {"gender_aware": gender_aware_infonce(z[fem], z[male], s[fem], s[male], cfg.temperature,
                                                     cfg.score_weight_alpha, cfg.score_sharpness,
                                                     cfg.asymmetric_f, cfg.asymmetric_m),
                # Trap: this key replaces the engine's matched-score 'wass' (the variant's terms are merged
                # after the shared ones): the original's Wasserstein is on image-level top-k scores.
                "wass": one_way_wasserstein(s[fem], s[male])}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        return {**super().weight_dict(epoch), "gender_aware": self.cfg.lambda_infonce}
