"""MMD feature alignment (the original's train_faap_mmd_1st.py): a multi-kernel RBF MMD between the
query-pooled decoder features of the female and the male sub-batch, no adversary; and its two failure
hypotheses (the original's note Report/04_mmd.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from faap.config import TrainConfig, bounded
from faap.errors import ConfigError
from faap.evidence import Difference, Evidence
from faap.losses import MMD_SIGMAS, multi_kernel_mmd, pool_queries
from faap.variants.base import Finding, Hypothesis, StepState, Variant


@dataclass
class MMDConfig(TrainConfig):
    lambda_mmd: float = bounded(2.0, ge=0)
    """Weight of the MMD term in G's loss (the original's lambda_fair)."""
    sigmas: list = field(default_factory=lambda: list(MMD_SIGMAS))
    """RBF bandwidths sigma of the summed kernels exp(-|x-y|^2 / (2 sigma^2))."""
    detach_male: bool = False
    """Male features as a fixed target (no gradient), as the 2nd; False: symmetric, as the 1st."""
    # Shared defaults the 1st changes (its argparse defaults); the rest (Adam, lr_g 1e-4, batch 4,
    # grad clip 0.1, lambda_wass 0.2, seed 42) are TrainConfig's already. Changed defaults keep the bounds.
    epochs: int = 12
    """Training epochs (the 1st: 12)."""
    eps_warmup_epochs: int = 10
    """Epochs of linear warm-up 0.05 -> 0.10 (the 1st: 10, eps = start + (peak - start) * epoch / 9)."""
    eps_hold_epochs: int = 2
    """Epochs at the peak after the warm-up (the 1st holds 0.10 to its end)."""
    eps_cooldown_epochs: int = 0
    """No cool-down: the 1st has no hold/cool-down phases."""
    eps_final: float = 0.10
    """Budget after the hold: the peak itself (the 1st keeps 0.10)."""
    beta_final: float = 0.5
    """Detection weight at the last epoch: the 1st's beta is a constant 0.5."""

    def check(self) -> None:
        super().check()
        if not self.sigmas or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0
                                  for s in self.sigmas):
            raise ConfigError(f"sigmas must be a non-empty list of positive numbers (got {self.sigmas})")


# ---- what the report says about MMD: two failure hypotheses, quoted from Report/04_mmd.md ----------
H1_ALIGNED = 0.20
"""H1 counts the features as aligned when the female/male MMD fell by more than this fraction."""
H1_MEANINGFUL_SHRINK = 0.10
"""A shrink of the test AP gap by this fraction of the clean detector's gap counts as an improvement."""
H2_SYMMETRIC = 0.8
H2_ONE_SIDED = 0.5


def h1_verdict(mmd_before: float, mmd_after: float, gap_change: Difference, clean_gap: float) -> tuple[str, dict]:
    """``gap_change``: the test difference (best condition - clean) in AP gap. Supported only when the
    interval rules out a meaningful shrink; a shrink it cannot rule out nor show is inconclusive."""
    lo, hi = gap_change.ci
    stats = {"mmd_before": mmd_before, "mmd_after": mmd_after, "mmd_drop": 1 - mmd_after / mmd_before,
             "gap_change": gap_change.value, "gap_change_ci": [lo, hi], "clean_test_AP_gap": clean_gap,
             "meaningful_shrink": H1_MEANINGFUL_SHRINK * clean_gap}
    if stats["mmd_drop"] <= H1_ALIGNED:
        return "inconclusive", stats  # the features were not aligned: nothing to say about alignment
    if hi < 0:
        return "not supported", stats  # the gap shrank, distinguishably
    return ("supported" if lo > -stats["meaningful_shrink"] else "inconclusive"), stats


def _judge_h1(evidence: Evidence) -> Finding:
    diag = evidence.features()
    # the bootstrap's clean value (not clean_gap's stored one): the same numbers as the difference
    clean = evidence.condition("test", "clean").value
    verdict, s = h1_verdict(diag["mmd"]["before"], diag["mmd"]["after"],
                            evidence.difference("test", evidence.best.name, "clean"), clean)
    lo, hi = s["gap_change_ci"]
    text = (f"female/male MMD of pooled decoder features {s['mmd_before']:.4f} (clean) -> {s['mmd_after']:.4f} "
            f"(perturbed, {-100 * s['mmd_drop']:+.1f}%); test AP gap change against the clean detector "
            f"{s['gap_change']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] (a meaningful shrink: {s['meaningful_shrink']:.3f}, "
            f"{H1_MEANINGFUL_SHRINK:.0%} of the clean gap {s['clean_test_AP_gap']:.3f})")
    return Finding(verdict, text, s, where=f"MMD on run {diag['run']} (selected epoch {diag['epoch']}, validation "
                   f"images); AP gap: the best trial's seeds on test")


def h2_verdict(shift_female: float, shift_male: float) -> tuple[str, dict]:
    if shift_female <= 0:  # G left women's features where they were: no ratio (and no inf in report.json)
        return "inconclusive", {"shift_female": shift_female, "shift_male": shift_male, "male_to_female": None}
    ratio = shift_male / shift_female
    stats = {"shift_female": shift_female, "shift_male": shift_male, "male_to_female": ratio}
    if ratio >= H2_SYMMETRIC:
        return "supported", stats
    return ("not supported" if ratio < H2_ONE_SIDED else "inconclusive"), stats


def _judge_h2(evidence: Evidence) -> Finding:
    shift = evidence.features()["feature_shift"]
    verdict, s = h2_verdict(shift["female"], shift["male"])
    text = (f"relative shift of pooled decoder features under the perturbation: female {s['shift_female']:.4f}, "
            f"male {s['shift_male']:.4f} (male/female {s['male_to_female'] or float('nan'):.2f})")
    return Finding(verdict, text, s)


HYPOTHESES = (
    Hypothesis("h1", "Feature alignment is not score alignment ('MMD로 feature 공간을 맞춰도 AP/AR Gap 개선으로 "
               "이어지지 않을 수 있음')", f"supported when the MMD fell by more than {H1_ALIGNED:.0%} and the 95% interval "
               f"of the test AP gap change against the clean detector rules out a shrink of {H1_MEANINGFUL_SHRINK:.0%} "
               "of the clean gap; not supported when the gap shrank distinguishably; otherwise (or when the MMD did not "
               "fall that much) inconclusive",
               _judge_h1),
    Hypothesis("h2", "The symmetric MMD also disturbs men ('1st의 대칭 구조가 남성 feature도 불필요하게 교란')",
               f"supported when male features move at least {H2_SYMMETRIC} times as far as female ones; not supported "
               f"below {H2_ONE_SIDED}", _judge_h2),
)


class MMD(Variant):
    name = "mmd"
    Config = MMDConfig
    reference = "adversarial"
    hypotheses = HYPOTHESES

    def mmd(self, female: torch.Tensor, male: torch.Tensor) -> torch.Tensor:
        male = male.detach() if self.cfg.detach_male else male
        return multi_kernel_mmd(pool_queries(female), pool_queries(male), self.cfg.sigmas)

    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        feats = state.out.features
        return {"mmd": self.mmd(feats[state.female], feats[state.male])}

    def weight_dict(self, epoch: int) -> dict[str, float]:
        return {**super().weight_dict(epoch), "mmd": self.cfg.lambda_mmd}

    def feature_measurements(self, initial: "MMD", features: dict) -> dict:
        with torch.no_grad():
            return {"mmd": {view: float(self.mmd(features["female"][key], features["male"][key]))
                            for view, key in (("before", "clean"), ("after", "perturbed"))}}
