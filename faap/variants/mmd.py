"""MMD feature alignment (the original's train_faap_mmd_1st.py): a multi-kernel RBF MMD between the
query-pooled decoder features of the female and the male sub-batch, no adversary; and its two failure
hypotheses (the original's note Report/04_mmd.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from faap.config import TrainConfig, bounded
from faap.errors import ConfigError
from faap.evidence import Difference, Evidence
from faap.losses import MMD_SIGMAS, multi_kernel_mmd, pool_queries
from faap.measures import bootstrap_ci, interval_text, rbf_kernels
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
# Rules (stated in the report next to every verdict); every one reads 95% bootstrap intervals.
H1_ALIGNED = 0.20
"""H1 counts the features as aligned when the female/male MMD fell by more than this fraction."""
H1_MEANINGFUL_SHRINK = 0.10
"""A shrink of the test AP gap by this fraction of the clean detector's gap counts as an improvement."""
H2_SYMMETRIC = 0.8
H2_ONE_SIDED = 0.5
REPLICATES = 1000
"""Bootstrap resamples of the validation images behind the MMD drop's and the shift ratio's intervals."""


def mmd_drop(images: dict, sigmas, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """The female/male MMD's relative drop (clean -> perturbed pooled features) with a 95% interval, each
    group's images resampled (the same draw before and after). Centred (``faap.measures.bootstrap_ci``):
    duplicated images raise a resample's MMD, the biased estimator counting every pair of copies."""
    def kernels(view):  # the MMD's three kernel matrices, computed once per view
        f, m = images["female"][view], images["male"][view]
        return rbf_kernels(f, f, sigmas), rbf_kernels(m, m, sigmas), rbf_kernels(f, m, sigmas)

    def mmd(k, i, j):  # multi_kernel_mmd of the rows i (female) and j (male)
        return k[0][np.ix_(i, i)].mean() + k[1][np.ix_(j, j)].mean() - 2 * k[2][np.ix_(i, j)].mean()

    before, after = kernels("clean"), kernels("perturbed")
    value, ci = bootstrap_ci(lambda i, j: 1 - mmd(after, i, j) / mmd(before, i, j), np.arange(len(before[0])),
                             np.arange(len(before[1])), replicates=replicates, seed=seed, centred=True)
    return {"mmd_drop": value, "mmd_drop_ci": ci}


def h1_verdict(mmd: dict, drop: dict, gap_change: Difference, clean_gap: float) -> tuple[str, dict]:
    """``mmd``: the measured MMD (``before``, ``after``); ``drop``: :func:`mmd_drop`; ``gap_change``: the test
    difference (best condition - clean) in AP gap. The MMD drop's interval decides whether the features were
    aligned; only then does the gap change's interval decide (``carried_by`` says which did)."""
    (lo, hi), d_ci = gap_change.ci, drop["mmd_drop_ci"]
    stats = {"mmd_before": mmd["before"], "mmd_after": mmd["after"], **drop, "gap_change": gap_change.value,
             "gap_change_ci": [lo, hi], "clean_test_AP_gap": clean_gap,
             "meaningful_shrink": H1_MEANINGFUL_SHRINK * clean_gap, "carried_by": "mmd_drop"}
    if d_ci is None or d_ci[0] <= H1_ALIGNED:
        return "inconclusive", stats  # the features were not shown aligned: nothing to say about alignment
    stats["carried_by"] = "gap_change"
    if hi < 0:
        return "not supported", stats  # the gap shrank, distinguishably
    return ("supported" if lo > -stats["meaningful_shrink"] else "inconclusive"), stats


def _judge_h1(evidence: Evidence) -> Finding:
    diag = evidence.features()
    # the bootstrap's clean value (not clean_gap's stored one): the same numbers as the difference
    clean = evidence.condition("test", "clean").value
    verdict, s = h1_verdict(diag["mmd"], mmd_drop(evidence.image_features(), diag["mmd"]["sigmas"]),
                            evidence.difference("test", evidence.best.name, "clean"), clean)
    lo, hi = s["gap_change_ci"]
    carried = {"mmd_drop": "the MMD drop (features not shown aligned)", "gap_change": "the AP gap change"}
    text = (f"female/male MMD of pooled decoder features {s['mmd_before']:.4f} (clean) -> {s['mmd_after']:.4f} "
            f"(perturbed; drop {interval_text(s['mmd_drop'], s['mmd_drop_ci'], '+.1%')}); test AP gap change against "
            f"the clean detector {s['gap_change']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] (a meaningful shrink: "
            f"{s['meaningful_shrink']:.3f}, {H1_MEANINGFUL_SHRINK:.0%} of the clean gap {s['clean_test_AP_gap']:.3f}); "
            f"verdict carried by {carried[s['carried_by']]}")
    n = diag["n_images"]
    return Finding(verdict, text, s, where=f"MMD on run {diag['run']} (selected epoch {diag['epoch']}, {n['female']} "
                   f"female and {n['male']} male validation images resampled); AP gap: the best trial's seeds on test")


def shift_ratio(images: dict, replicates: int = REPLICATES, seed: int = 0) -> dict:
    """Each group's relative shift of pooled features under the perturbation (mean |perturbed - clean| over
    mean |clean|) and the male/female ratio with a 95% interval, each group's images resampled."""
    moved = {g: np.linalg.norm(images[g]["perturbed"] - images[g]["clean"], axis=1) for g in ("female", "male")}
    size = {g: np.linalg.norm(images[g]["clean"], axis=1) for g in ("female", "male")}
    shift = lambda g, i: np.float64(moved[g][i].mean()) / size[g][i].mean()  # noqa: E731 - inf, not an error, at 0
    n_f, n_m = np.arange(len(moved["female"])), np.arange(len(moved["male"]))
    stats = {"shift_female": float(shift("female", n_f)), "shift_male": float(shift("male", n_m))}
    if stats["shift_female"] <= 0:  # G left women's features where they were: no ratio (and no inf in report.json)
        return {**stats, "male_to_female": None, "male_to_female_ci": None}
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of unmoved women only: dropped (not finite)
        ratio, ci = bootstrap_ci(lambda i, j: shift("male", j) / shift("female", i), n_f, n_m,
                                 replicates=replicates, seed=seed)
    return {**stats, "male_to_female": ratio, "male_to_female_ci": ci}


def h2_verdict(m: dict) -> str:
    """``m``: :func:`shift_ratio`. Supported when the ratio's interval lies wholly at or above
    :data:`H2_SYMMETRIC`, not supported when wholly below :data:`H2_ONE_SIDED`, otherwise inconclusive."""
    ci = m["male_to_female_ci"]
    if ci is None:
        return "inconclusive"
    return "supported" if ci[0] >= H2_SYMMETRIC else "not supported" if ci[1] < H2_ONE_SIDED else "inconclusive"


def _judge_h2(evidence: Evidence) -> Finding:
    s = shift_ratio(evidence.image_features())
    ratio = "no ratio" if s["male_to_female"] is None else interval_text(s["male_to_female"], s["male_to_female_ci"],
                                                                         ".2f")
    text = (f"relative shift of pooled decoder features under the perturbation: female {s['shift_female']:.4f}, "
            f"male {s['shift_male']:.4f} (male/female {ratio})")
    n = evidence.features()["n_images"]
    return Finding(h2_verdict(s), text, s, where=f"{n['female']} female and {n['male']} male validation images "
                   "resampled")


HYPOTHESES = (
    Hypothesis("h1", "Feature alignment is not score alignment ('MMD로 feature 공간을 맞춰도 AP/AR Gap 개선으로 "
               "이어지지 않을 수 있음')", f"on 95% intervals: when the MMD's drop lies wholly above {H1_ALIGNED:.0%} (the "
               "features aligned), the test AP gap change against the clean detector decides: supported when it rules "
               f"out a shrink of {H1_MEANINGFUL_SHRINK:.0%} of the clean gap, not supported when the gap shrank "
               "distinguishably, otherwise inconclusive; when the MMD's drop does not (alignment not shown), "
               "inconclusive", _judge_h1),
    Hypothesis("h2", "The symmetric MMD also disturbs men ('1st의 대칭 구조가 남성 feature도 불필요하게 교란')",
               f"on the 95% interval of the male/female shift ratio: supported when it lies wholly at or above "
               f"{H2_SYMMETRIC}, not supported when wholly below {H2_ONE_SIDED}, otherwise inconclusive", _judge_h2),
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
            return {"mmd": {**{view: float(self.mmd(features["female"][key], features["male"][key]))
                               for view, key in (("before", "clean"), ("after", "perturbed"))},
                            "sigmas": list(self.cfg.sigmas)}}  # H1's judge resamples the MMD with these
