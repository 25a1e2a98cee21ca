"""fix10_scf, fix11_conditional, fix11_contrastive: their losses against line-by-line transcriptions of the
originals (train_faap_simclr_infonce_fix10gpu_scf_20260324.py, ..._fix11gpu_conditional_20260324.py,
train_faap_fix11_contrastive_gpu_20260410.py), their defaults, their judges and a one-epoch `faap train`."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from faap.detector import DetectorOutput
from faap.losses import (conditional_contrastive, image_level_scores, scf_contrastive,
                         softmax_weighted_contrastive)
from faap.variants import VARIANTS, make_config
from faap.variants.base import StepState


# ---- transcriptions of the originals (their names, their lines; only `self.` and the info dicts dropped) ----
def orig_fix10_loss(projections, scores, genders, temperature=0.1, bandwidth_scale=1.0):
    anchor_idx = [i for i, g in enumerate(genders) if g == "female"]
    target_idx = [i for i, g in enumerate(genders) if g == "male"]
    if len(anchor_idx) < 1 or len(target_idx) < 1:
        return projections.new_tensor(0.0)
    anchor_t = torch.tensor(anchor_idx, device=projections.device, dtype=torch.long)
    target_t = torch.tensor(target_idx, device=projections.device, dtype=torch.long)
    proj_anchor = projections[anchor_t]
    proj_target = projections[target_t].detach()
    scores_anchor = scores[anchor_t]
    scores_target = scores[target_t]
    score_std = scores.detach().std().clamp(min=1e-6)
    sigma = score_std * bandwidth_scale
    score_diff_sq = (scores_anchor.unsqueeze(1) - scores_target.unsqueeze(0)) ** 2
    weights = torch.exp(-score_diff_sq / (2 * sigma ** 2))
    sim_a2t = torch.mm(proj_anchor, proj_target.t()) / temperature
    proj_all = torch.cat([proj_anchor, proj_target], dim=0)
    sim_a2all = torch.mm(proj_anchor, proj_all.t()) / temperature
    mask_self = torch.zeros(len(anchor_idx), len(anchor_idx) + len(target_idx),
                            device=projections.device, dtype=torch.bool)
    for i in range(len(anchor_idx)):
        mask_self[i, i] = True
    sim_a2all_masked = sim_a2all.masked_fill(mask_self, float('-inf'))
    log_denom = torch.logsumexp(sim_a2all_masked, dim=1)
    w_sum = weights.sum(dim=1).clamp(min=1e-6)
    weighted_sim = (sim_a2t * weights).sum(dim=1) / w_sum
    per_anchor_loss = -(weighted_sim - log_denom)
    return per_anchor_loss.mean()


def orig_fix11_conditional_loss(projections, scores, genders, temperature=0.1, bandwidth_scale=1.0):
    n = projections.size(0)
    anchor_idx = [i for i, g in enumerate(genders) if g == "female"]
    target_idx = [i for i, g in enumerate(genders) if g == "male"]
    if len(anchor_idx) < 1 or len(target_idx) < 1:
        return projections.new_tensor(0.0)
    anchor_t = torch.tensor(anchor_idx, device=projections.device, dtype=torch.long)
    target_t = torch.tensor(target_idx, device=projections.device, dtype=torch.long)
    score_std = scores.detach().std().clamp(min=1e-6)
    sigma = score_std * bandwidth_scale
    s_anchor = scores.detach()[anchor_t]
    s_target = scores.detach()[target_t]
    score_diff_sq = (s_anchor.unsqueeze(1) - s_target.unsqueeze(0)) ** 2
    weights = torch.exp(-score_diff_sq / (2 * sigma ** 2))
    proj_anchor = projections[anchor_t]
    proj_target = projections[target_t].detach()
    sim_all = torch.mm(projections, projections.t()) / temperature
    mask_self = torch.eye(n, device=projections.device, dtype=torch.bool)
    sim_anchors = sim_all[anchor_t].masked_fill(mask_self[anchor_t], float('-inf'))
    log_denom = torch.logsumexp(sim_anchors, dim=1)
    sim_a2t = torch.mm(proj_anchor, proj_target.t()) / temperature
    weight_sum = weights.sum(dim=1).clamp(min=1e-6)
    weighted_pos_sim = (sim_a2t * weights).sum(dim=1) / weight_sum
    per_anchor_loss = -(weighted_pos_sim - log_denom)
    return per_anchor_loss.mean()


def orig_fix11_contrastive_loss(proj_f, proj_m, scores_f, scores_m, temperature=0.1):
    n_f = proj_f.size(0)
    n_m = proj_m.size(0)
    if n_f < 1 or n_m < 1:
        return proj_f.new_tensor(0.0)
    weights_m = torch.softmax(scores_m.detach() / 0.1, dim=0)
    sim_f2m = torch.mm(proj_f, proj_m.t()) / temperature
    sim_f2f = torch.mm(proj_f, proj_f.t()) / temperature
    mask_self = torch.eye(n_f, device=proj_f.device, dtype=torch.bool)
    sim_f2f = sim_f2f.masked_fill(mask_self, float('-inf'))
    weighted_pos = (sim_f2m * weights_m.unsqueeze(0)).sum(dim=1)
    all_sims = torch.cat([sim_f2m, sim_f2f], dim=1)
    log_denom = torch.logsumexp(all_sims, dim=1)
    return -(weighted_pos - log_denom).mean()


def orig_image_level_detection_score(outputs, top_k=10):
    probs = outputs["pred_logits"].softmax(dim=-1)[..., :-1]
    max_probs = probs.max(dim=-1).values
    if top_k > 0 and top_k < max_probs.size(1):
        topk_probs = max_probs.topk(top_k, dim=1).values
        return topk_probs.mean(dim=1)
    return max_probs.mean(dim=1)


# ---- the suite's losses equal them (value and gradients), on shuffled groups ----
def _inputs(n=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    genders = ["female", "male", "male", "female", "female", "male", "female"][:n]
    z = F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_()
    s = torch.rand(n, generator=g).requires_grad_()
    order = sorted(range(n), key=lambda i: genders[i] != "female")  # the suite's female-first rows
    return z, s, genders, order, genders.count("female")


def _grads(loss, *leaves):
    return torch.autograd.grad(loss, leaves, allow_unused=True)


@pytest.mark.parametrize("ours,theirs", [(scf_contrastive, orig_fix10_loss),
                                         (conditional_contrastive, orig_fix11_conditional_loss)])
@pytest.mark.parametrize("temperature,bandwidth", [(0.1, 1.0), (0.3, 0.5)])
def test_score_kernel_losses_equal_the_originals(ours, theirs, temperature, bandwidth):
    z, s, genders, order, n_f = _inputs()
    want = theirs(z, s, genders, temperature, bandwidth)
    got = ours(z[order], s[order], n_f, temperature, bandwidth)
    torch.testing.assert_close(got, want)
    for a, b in zip(_grads(got, z, s), _grads(want, z, s)):
        torch.testing.assert_close(torch.zeros(1) if a is None else a, torch.zeros(1) if b is None else b)
    one_group = ours(z[:3], s[:3], 3, temperature, bandwidth)
    assert one_group.item() == 0.0 == theirs(z[:3], s[:3], ["female"] * 3).item()


def test_the_two_score_kernel_losses_differ_where_the_originals_do():
    """fix10 trains through the kernel's scores; fix11_conditional does not but lets the men's
    projections into the denominator's graph."""
    z, s, _, order, n_f = _inputs()
    g10 = _grads(scf_contrastive(z[order], s[order], n_f), z, s)
    g11 = _grads(conditional_contrastive(z[order], s[order], n_f), z, s)
    males = torch.tensor([i for i in range(7) if i not in order[:n_f]])
    assert g10[1].abs().sum() > 0 and g11[1] is None
    assert g10[0][males].abs().sum() == 0 and g11[0][males].abs().sum() > 0


@pytest.mark.parametrize("temperature", [0.1, 0.25])
def test_softmax_weighted_contrastive_equals_the_original(temperature):
    z, s, genders, order, n_f = _inputs(seed=1)
    f, m = order[:n_f], order[n_f:]
    want = orig_fix11_contrastive_loss(z[f], z[m], s[f], s[m], temperature)
    got = softmax_weighted_contrastive(z[f], z[m], s[m], temperature, 0.1)
    torch.testing.assert_close(got, want)
    for a, b in zip(_grads(got, z), _grads(want, z)):
        torch.testing.assert_close(a, b)
    assert softmax_weighted_contrastive(z[f], z[:0], s[:0]).item() == 0.0


def test_image_level_score_equals_the_original():
    logits = torch.randn(3, 20, 5)
    for k in (0, 4, 10, 30):
        torch.testing.assert_close(image_level_scores(logits.softmax(-1)[..., :-1], k),
                                   orig_image_level_detection_score({"pred_logits": logits}, k))


# ---- each variant's loss terms: the originals' per-step lines on a stub step ----
def _state(n_f=3, n=7, q=6, d=16, classes=4, seed=2, clean=True):
    g = torch.Generator().manual_seed(seed)
    out = DetectorOutput(torch.randn(n, q, classes + 1, generator=g), torch.rand(n, q, 4, generator=g),
                         torch.randn(n, q, d, generator=g).requires_grad_(), [])
    clean_out = DetectorOutput(out.logits, out.boxes, torch.randn(n, q, d, generator=g), []) if clean else None
    probs = lambda logits: logits.softmax(-1)[..., :-1]  # noqa: E731 - DETR's class_probs
    return StepState(out, n_f, epoch=5, extras={"class_probs": probs}, clean=clean_out)


def _variant(name, **over):
    torch.manual_seed(0)
    var = VARIANTS[name](make_config(name, over), 16)
    return var.eval()  # dropout off: the transcription below runs the same head


def test_fix10_terms_equal_the_originals_step():
    var, state = _variant("fix10_scf", score_top_k=4), _state()
    terms = var.loss_terms(state)
    genders = ["female"] * 3 + ["male"] * 4
    projections = var.proj_head(state.out.features)
    image_scores = orig_image_level_detection_score({"pred_logits": state.out.logits}, top_k=4)
    torch.testing.assert_close(terms["contrastive"], orig_fix10_loss(projections, image_scores, genders))
    male_t = torch.tensor([3, 4, 5, 6])
    want = F.mse_loss(state.out.features.mean(dim=1)[male_t], state.clean.features.mean(dim=1)[male_t].detach())
    torch.testing.assert_close(terms["stability"], want)
    w = var.weight_dict(1)
    assert w["contrastive"] == pytest.approx(1 / 3) and w["stability"] == 0.5 and w["wass"] == 0.0


def test_fix11_conditional_terms_and_weights():
    var, state = _variant("fix11_conditional"), _state(clean=False)
    genders = ["female"] * 3 + ["male"] * 4
    want = orig_fix11_conditional_loss(var.proj_head(state.out.features),
                                       orig_image_level_detection_score({"pred_logits": state.out.logits}), genders)
    torch.testing.assert_close(var.loss_terms(state)["contrastive"], want)
    assert not var.needs_clean_outputs and var.group_det_terms and var.whole_batch
    w = var.weight_dict(23)
    assert (w["det_f"], w["det_m"], w["wass"], w["contrastive"]) == (pytest.approx(0.6), 0.5, 0.0, 1.0)


@pytest.mark.parametrize("gamma", [0.5, 0.0])
def test_fix11_contrastive_terms_equal_the_originals_step(gamma):
    var = _variant("fix11_contrastive", gamma=gamma)
    state = _state(clean=gamma > 0)
    assert var.needs_clean_outputs == (gamma > 0)  # gamma 0: the no_l2 script, which made no clean forward
    terms = var.loss_terms(state)
    z_pert = var.proj_head(state.out.features)
    image_scores = orig_image_level_detection_score({"pred_logits": state.out.logits}, top_k=10)
    female_idx, male_idx = [0, 1, 2], [3, 4, 5, 6]
    want = orig_fix11_contrastive_loss(z_pert[female_idx], z_pert[male_idx], image_scores[female_idx],
                                       image_scores[male_idx])
    torch.testing.assert_close(terms["contrastive"], want)
    if gamma:
        with torch.no_grad():
            z_clean = var.proj_head(state.clean.features)
        torch.testing.assert_close(terms["l2_anchor"], F.mse_loss(z_pert[male_idx], z_clean[male_idx]))
    else:
        assert terms["l2_anchor"].item() == 0.0
    assert var.weight_dict(0)["l2_anchor"] == gamma and var.skips(0, 5) and var.skips(5, 5) and not var.skips(2, 5)


# ---- defaults: every hyperparameter of the scripts ----
FIX10 = {"epochs": 24, "batch_size": 5, "lr_g": 5e-5, "optimizer": "adamw", "weight_decay": 0.01,
         "lr_schedule": "warmup_cosine", "lr_warmup_epochs": 3, "lr_min_ratio": 0.1, "lr_step_every": "epoch",
         "ema_decay": 0.999, "eps_start": 0.05, "eps_peak": 0.10, "eps_final": 0.09, "eps_hold_epochs": 6,
         "eps_cooldown_epochs": 10, "beta_start": 0.5, "beta_final": 0.6, "lambda_wass": 0.0, "sampler": "natural",
         "amp": "bf16", "grad_clip": 0.1, "lambda_con": 1.0, "bandwidth_scale": 1.0, "temperature": 0.1,
         "contrastive_warmup_epochs": 3, "score_top_k": 10, "proj_dim": 128, "proj_dropout": 0.1, "aux_loss": True}
EXPECTED = {
    "fix10_scf": {**FIX10, "lambda_stab": 0.5},
    "fix11_conditional": {**FIX10, "beta_male": 0.5},
    "fix11_contrastive": {"epochs": 15, "batch_size": 5, "lr_g": 5e-5, "optimizer": "adamw", "weight_decay": 0.01,
                          "lr_schedule": "cosine", "lr_min_ratio": 0.1, "ema_decay": 0.0, "eps_start": 0.05,
                          "eps_peak": 0.10, "eps_final": 0.09, "eps_warmup_epochs": 5, "eps_hold_epochs": 4,
                          "eps_cooldown_epochs": 6, "beta_start": 0.5, "beta_final": 0.6, "beta_m": 0.5, "gamma": 0.5,
                          "lambda_wass": 0.0, "sampler": "balanced", "amp": "bf16", "grad_clip": 0.1,
                          "lambda_con": 1.0, "temperature": 0.1, "weight_temperature": 0.1, "score_top_k": 10,
                          "proj_dim": 128, "proj_dropout": 0.1, "aux_loss": False},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_defaults_are_the_scripts(name):
    cfg = make_config(name, {})
    assert {k: getattr(cfg, k) for k in EXPECTED[name]} == EXPECTED[name]


def _orig_fix10_eps(epoch, eps_start=0.05, eps_peak=0.10, eps_min=0.09, warmup_epochs=8, hold_epochs=6,
                    cooldown_epochs=10):
    warmup_end = warmup_epochs
    hold_end = warmup_end + hold_epochs
    if epoch < warmup_end:
        return eps_start + (eps_peak - eps_start) * epoch / max(1, warmup_end)
    elif epoch < hold_end:
        return eps_peak
    else:
        progress = min((epoch - hold_end) / max(1, cooldown_epochs), 1.0)
        return eps_peak + (eps_min - eps_peak) * progress


def _orig_fix11_eps(epoch, warmup_epochs=5, hold_epochs=4, cooldown_epochs=6, eps_start=0.05, eps_peak=0.10,
                    eps_min=0.09):
    warmup_end = 0 if warmup_epochs <= 1 else warmup_epochs - 1
    if epoch <= warmup_end:
        progress = min(epoch / max(1, warmup_epochs - 1), 1.0)
        return eps_start + (eps_peak - eps_start) * progress
    hold_end = warmup_end + max(0, hold_epochs)
    if epoch <= hold_end:
        return eps_peak
    if cooldown_epochs <= 0:
        return eps_peak
    progress = (epoch - hold_end) / max(1, cooldown_epochs)
    if progress >= 1.0:
        return eps_min
    return eps_peak + (eps_min - eps_peak) * progress


@pytest.mark.parametrize("name,orig", [("fix10_scf", _orig_fix10_eps), ("fix11_conditional", _orig_fix10_eps),
                                       ("fix11_contrastive", _orig_fix11_eps)])
def test_eps_schedule_is_the_scripts(name, orig):
    from faap.engine import current_eps

    cfg = make_config(name, {})
    assert [current_eps(cfg, e) for e in range(cfg.epochs)] == pytest.approx([orig(e) for e in range(cfg.epochs)])


# ---- judges on a stub evidence ----
class _Evidence:
    def __init__(self, records, diff=(-0.02, (-0.03, -0.01))):
        self.records = pd.DataFrame(records, columns=["run", "epoch", "metric", "value"])
        self.best = SimpleNamespace(name="trial 0")
        value, ci = diff
        self.diff = SimpleNamespace(value=value, ci=ci, half_width=(ci[1] - ci[0]) / 2, p=0.01, runs=(2, 2))

    def trial_epochs(self, metric):
        return self.records[self.records.metric == metric].sort_values(["run", "epoch"])

    def difference(self, split, a, b, metric="AP_gap"):
        return self.diff


def _records(metric_values: dict, runs=("r0", "r1", "r2")):
    rng = np.random.default_rng(0)
    return [(run, e, metric, v + rng.normal(0, 0.001)) for run in runs for e in range(3)
            for metric, v in metric_values.items()]


def test_male_delta_judge_reads_the_interval():
    judge = VARIANTS["fix11_contrastive"].hypotheses[0].judge
    assert judge(_Evidence(_records({"delta_linf_f": 0.1, "delta_linf_m": 0.02}))).verdict == "supported"
    assert judge(_Evidence(_records({"delta_linf_f": 0.1, "delta_linf_m": 0.099}))).verdict == "not supported"
    assert judge(_Evidence([])).verdict == "inconclusive"
    # Runs on both sides of the threshold: the interval of the ratio straddles 0.5.
    straddling = [(run, e, metric, v) for run, ratio in (("r0", 0.3), ("r1", 0.7), ("r2", 0.4), ("r3", 0.6))
                  for e in range(3) for metric, v in (("delta_linf_f", 0.1), ("delta_linf_m", 0.1 * ratio))]
    found = judge(_Evidence(straddling))
    assert found.verdict == "inconclusive" and found.stats["ratio_ci"][0] < 0.5 < found.stats["ratio_ci"][1]


def test_gap_and_score_gap_judges():
    gap = VARIANTS["fix10_scf"].hypotheses[1].judge
    assert gap(_Evidence([])).verdict == "supported"
    assert gap(_Evidence([], (0.0, (-0.01, 0.01)))).verdict == "inconclusive"
    assert gap(_Evidence([], (0.02, (0.01, 0.03)))).verdict == "not supported"
    assert "half-width" in gap(_Evidence([])).text
    closes = VARIANTS["fix10_scf"].hypotheses[0].judge
    shrinking = [(r, e, "train_score_gap", 0.1 / (e + 1) + 0.001 * i) for i, r in enumerate("abc") for e in range(3)]
    assert closes(_Evidence(shrinking)).verdict == "supported"
    growing = [(r, e, "train_score_gap", 0.1 * (e + 1) + 0.001 * i) for i, r in enumerate("abc") for e in range(3)]
    assert closes(_Evidence(growing)).verdict == "not supported"
    mixed = [(r, e, "train_score_gap", 0.1 * (e + 1) if r in "ac" else 0.1 / (e + 1)) for r in "abcd" for e in range(3)]
    assert closes(_Evidence(mixed)).verdict == "inconclusive"  # two runs close it, two widen it


# ---- one epoch of each through `faap train` ----
@pytest.mark.parametrize("name,own", [("fix10_scf", "loss_stability"), ("fix11_conditional", "loss_det_m"),
                                      ("fix11_contrastive", "loss_l2_anchor")])
def test_faap_train_one_epoch(tiny_data, tmp_path, name, own):
    from faap.cli import main

    out = tmp_path / name
    sets = ["epochs=1", "epoch_samples=8", "batch_size=4", "train_scales=[128]", "max_size=128", "eval_size=128",
            "random_crop=false", "device=cpu", "proj_dim=16"]
    assert main(["train", "--variant", name, "--data", tiny_data, "--detector", "demo", "--out", str(out),
                 "--quiet"] + [a for s in sets for a in ("--set", s)]) == 0
    with open(out / "metrics.jsonl") as f:
        record = json.loads(f.readline())
    for key in (own, "loss_contrastive", "train_score_gap", "delta_linf_f", "delta_linf_m", "lr_g"):
        assert key in record, key
    assert os.path.isfile(out / "summary.json")
