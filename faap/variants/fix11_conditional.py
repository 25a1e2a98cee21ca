"""fix11_conditional (the original's train_faap_simclr_infonce_fix11gpu_conditional_20260324.py): fix10's
score-kernel contrastive loss (women anchors; here the kernel's scores detached), no stability term and no
extra forward, and the detection loss split by group: ``beta x det_f + beta_male x det_m`` ('male samples
only receive detection loss: the generator learns delta_male ~ 0 naturally'). G runs once over the batch.

Not ported: ``--use_hungarian_score`` (off by default) and ``torch.compile`` (off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faap.config import bounded
from faap.evidence import Evidence
from faap.losses import conditional_contrastive
from faap.measures import cluster_bootstrap_ci, interval_text, verdict_below
from faap.variants.base import Finding, Hypothesis, StepState, Variant
from faap.variants.fix10_scf import (GAP_BELOW_CLEAN, DropoutProjectionHead, ScoreKernelConfig, batch_scores,
                                     contrastive_ramp)


@dataclass
class Fix11ConditionalConfig(ScoreKernelConfig):
    beta_male: float = bounded(0.5, ge=0)
    """Weight of the men's detection term (fixed); the women's follows beta_start -> beta_final."""


# ---- failure hypotheses from the originals' notes; rules read 95% bootstrap intervals ----
SUPPRESSED = 0.5
"""'delta_linf_m << delta_linf_f': the men's mean L-inf perturbation under half the women's."""


def judge_male_delta_suppressed(evidence: Evidence) -> Finding:
    """fix11's intended outcome: men's perturbations much smaller than women's (ratio of the logged per-group
    L-inf norms, mean over run-epoch records, runs resampled)."""
    f = evidence.trial_epochs("delta_linf_f").set_index(["run", "epoch"])["value"]
    m = evidence.trial_epochs("delta_linf_m").set_index(["run", "epoch"])["value"]
    ratio = (m / f).replace([np.inf, -np.inf], np.nan).dropna()
    if ratio.empty:
        return Finding("inconclusive", "no epoch records both groups' perturbation norms (0 records)", {"n": 0})
    runs = ratio.index.get_level_values("run")
    r, ci = cluster_bootstrap_ci(np.mean, ratio.to_numpy(), runs.to_numpy())
    n_runs = runs.nunique()
    verdict = verdict_below(ci, SUPPRESSED)
    text = (f"men's mean L-inf perturbation over women's {interval_text(r, ci, '.3f')} (delta_linf_m "
            f"{m.mean():.4f}, delta_linf_f {f.mean():.4f}; mean of {len(ratio)} run-epoch records, "
            + ("runs resampled)" if n_runs > 1 else "one run: its epochs resampled, the spread between seeds unmeasured)"))
    return Finding(verdict, text, {"ratio": r, "ratio_ci": ci, "n": len(ratio), "n_runs": n_runs})


MALE_DELTA_SUPPRESSED = Hypothesis(
    "male_delta_suppressed", "Men's perturbations stay much smaller than women's ('delta_linf_m << delta_linf_f')",
    f"on the 95% interval of the mean ratio delta_linf_m / delta_linf_f over run-epoch records (runs resampled, or "
    f"one run's epochs): supported when it lies wholly below {SUPPRESSED}, not supported when wholly at or above "
    f"{SUPPRESSED}, otherwise inconclusive", judge_male_delta_suppressed)


class Fix11(Variant):
    """What the fix11 scripts share (no name: not registered): one G and detector pass over the whole batch,
    detection terms per group, a projection head with dropout, their hypotheses against the 7th."""

    reference = "adversarial"
    hypotheses = (MALE_DELTA_SUPPRESSED, GAP_BELOW_CLEAN)
    whole_batch = True  # one G pass and one detector pass over the whole batch
    group_det_terms = True  # det_f and det_m, each over its group's boxes, weighted apart

    def __init__(self, cfg, hidden_dim: int):
        super().__init__(cfg, hidden_dim)
        self.proj_head = DropoutProjectionHead(hidden_dim, cfg.proj_dim, cfg.proj_dropout)

    def g_parameters(self):
        return list(self.proj_head.parameters())


class Fix11Conditional(Fix11):
    name = "fix11_conditional"
    Config = Fix11ConditionalConfig
    label = "fix11 conditional (per-group detection terms)"

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        return {"contrastive": conditional_contrastive(self.proj_head(state.out.features),
                                                       batch_scores(state, cfg.score_top_k), state.n_female,
                                                       cfg.temperature, cfg.bandwidth_scale)}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        return {**super().weight_dict(epoch), "det_m": cfg.beta_male,  # det_f: beta_start -> beta_final
                "contrastive": cfg.lambda_con * contrastive_ramp(epoch, cfg.contrastive_warmup_epochs)}
