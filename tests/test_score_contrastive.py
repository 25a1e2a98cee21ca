"""score_contrastive against the original (eeshape/faap_gan train_faap_score_contrastive.py, v2 with the adaptive
percentile split): its losses, its head, its single-pass step; bounds, a tiny run and its hypotheses."""

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analysis.evidence import StudyEvidence
from conftest import tiny_values
from faap.evidence import Best
from faap.losses import one_way_wasserstein, percentile_split, score_contrastive
from faap.variants import VARIANTS, make_config
from faap.variants.score_contrastive import H1_CLEAR, H1_MARGIN, H2_CLEAR, H2_SHRINK


# ---- the original's code, transcribed (AdaptiveScoreContrastiveLoss / BidirectionalScoreContrastiveLoss.forward,
# _get_image_level_scores, _wasserstein_1d_asymmetric with _resize_sorted, ProjectionHead) -------------------
def original_split(scores, top_k_percent, bottom_k_percent, min_samples):
    n = scores.size(0)
    sorted_indices = scores.argsort(descending=True)
    n_top = max(min_samples, int(n * top_k_percent))
    n_bottom = max(min_samples, int(n * bottom_k_percent))
    if n_top + n_bottom > n:
        n_top = n // 2
        n_bottom = n - n_top
    return sorted_indices[:n_top], sorted_indices[-n_bottom:]


def original_adaptive(projections, scores, temperature=0.1, top=0.4, bottom=0.4, min_samples=2):
    if projections.size(0) < min_samples * 2:
        return projections.new_tensor(0.0)
    top_indices, bottom_indices = original_split(scores, top, bottom, min_samples)
    positive_feats, anchor_feats = projections[top_indices], projections[bottom_indices]
    sim_anchor_to_pos = torch.mm(anchor_feats, positive_feats.t()) / temperature
    sim_anchor_to_all = torch.mm(anchor_feats, projections.t()) / temperature
    for i, idx in enumerate(bottom_indices):
        sim_anchor_to_all[i, idx] = float("-inf")
    numerator = torch.logsumexp(sim_anchor_to_pos, dim=1)
    denominator = torch.logsumexp(sim_anchor_to_all, dim=1)
    return -(numerator - denominator).mean()


def original_bidirectional(projections, scores, temperature=0.1, top=0.4, bottom=0.4, anchor_weight=1.0,
                           positive_weight=0.3, min_samples=2):
    if projections.size(0) < min_samples * 2:
        return projections.new_tensor(0.0)
    loss_a2p = original_adaptive(projections, scores, temperature, top, bottom, min_samples)
    top_indices, _ = original_split(scores, top, bottom, min_samples)
    n_top = len(top_indices)
    positive_feats = projections[top_indices]
    if n_top >= 2:
        sim_p2p = torch.mm(positive_feats, positive_feats.t()) / temperature
        mask_p = torch.eye(n_top, dtype=torch.bool)
        sim_p2p_masked = sim_p2p.masked_fill(mask_p, float("-inf"))
        sim_p2all = torch.mm(positive_feats, projections.t()) / temperature
        for i, idx in enumerate(top_indices):
            sim_p2all[i, idx] = float("-inf")
        loss_p2p = -(torch.logsumexp(sim_p2p_masked, dim=1) - torch.logsumexp(sim_p2all, dim=1)).mean()
    else:
        loss_p2p = projections.new_tensor(0.0)
    return anchor_weight * loss_a2p + positive_weight * loss_p2p


def original_image_scores(probs, indices, targets):
    image_scores = []
    for b, (src_idx, tgt_idx) in enumerate(indices):
        if len(src_idx) == 0:
            image_scores.append(torch.tensor(0.0))
        else:
            image_scores.append(probs[b, src_idx, targets[b]["class_labels"][tgt_idx]].mean())
    return torch.stack(image_scores)


def original_wasserstein(female_scores, male_scores):
    def resize_sorted(scores, target_len):
        if scores.numel() == target_len:
            return scores
        idx = torch.linspace(0, scores.numel() - 1, target_len)
        idx_low, idx_high = idx.floor().long(), idx.ceil().long()
        weight = idx - idx_low
        return scores[idx_low] * (1 - weight) + scores[idx_high] * weight

    sorted_f = female_scores.sort().values
    sorted_m = male_scores.detach().sort().values
    k = max(sorted_f.numel(), sorted_m.numel())
    return F.relu(resize_sorted(sorted_m, k) - resize_sorted(sorted_f, k)).mean()


def _z(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1).requires_grad_(), torch.rand(n, generator=g)


@pytest.mark.parametrize("n,top,bottom,min_samples", [(7, 0.4, 0.4, 2), (8, 0.25, 0.25, 2), (5, 0.6, 0.6, 2),
                                                      (12, 0.3, 0.5, 1), (4, 0.4, 0.4, 2), (9, 0.1, 0.9, 3)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_losses_match_the_original(n, top, bottom, min_samples, temperature):
    z, scores = _z(n, seed=n)
    ours, split = score_contrastive(z, scores, temperature, top, bottom, min_samples)
    ref = original_adaptive(z, scores, temperature, top, bottom, min_samples)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, z)
    g_ref, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(split, original_split(scores, top, bottom, min_samples)):
        assert torch.equal(a, b)
    both, _ = score_contrastive(z, scores, temperature, top, bottom, min_samples, positive_weight=0.3, anchor_weight=1.2)
    torch.testing.assert_close(both, original_bidirectional(z, scores, temperature, top, bottom, 1.2, 0.3, min_samples),
                               rtol=1e-6, atol=1e-6)


def test_hand_computed_tiny_case():
    # Scores rank rows 0, 2 (positives) above 3, 1 (anchors); positives point along x, anchors along y.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2])
    loss, (top, bottom) = score_contrastive(z, scores, temperature=1.0)
    assert top.tolist() == [0, 2] and bottom.tolist() == [3, 1]
    # Each anchor: positives at cos 0 and 0, the other anchor at cos 1: -log(2 / (2 + e)).
    assert loss.item() == pytest.approx(math.log(1 + math.e / 2), abs=1e-6)
    # Each positive: the other positive at cos 1, anchors at 0: -log(e / (e + 2)).
    both, _ = score_contrastive(z, scores, temperature=1.0, positive_weight=0.3)
    assert both.item() == pytest.approx(math.log(1 + math.e / 2) + 0.3 * (math.log(math.e + 2) - 1), abs=1e-6)
    # Too small a batch: a constant zero without a graph; splits by hand.
    small, split = score_contrastive(z[:3].requires_grad_(), scores[:3])
    assert small.item() == 0 and split is None and not small.requires_grad
    assert [len(i) for i in percentile_split(torch.rand(7))] == [2, 2]  # int(2.8) = 2
    assert [len(i) for i in percentile_split(torch.rand(5), 0.6, 0.6)] == [2, 3]  # overlap: halves
    assert [len(i) for i in percentile_split(torch.rand(10), 0.3, 0.7, 1)] == [3, 7]


def test_image_scores_and_wasserstein_match_the_original():
    from faap.engine import group_set_loss

    torch.manual_seed(1)
    probs = torch.rand(5, 6, 3)
    targets = [{"class_labels": torch.tensor([2, 0])}, {"class_labels": torch.tensor([1])}, {"class_labels": torch.tensor([], dtype=torch.long)},
               {"class_labels": torch.tensor([0, 1, 2])}, {"class_labels": torch.tensor([1])}]
    indices = [(torch.tensor([4, 1]), torch.tensor([1, 0])), (torch.tensor([3]), torch.tensor([0])),
               (torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)),
               (torch.tensor([0, 5, 2]), torch.tensor([2, 0, 1])), (torch.tensor([2]), torch.tensor([0]))]

    class Stub:  # the wrapper's matched_scores on fixed matchings; the loss counts images
        def set_loss(self, out, tg):
            first = next(i for i, t in enumerate(targets) if t is tg[0])
            return torch.tensor(float(len(tg))), {}, indices[first:first + len(tg)]

        def matched_scores(self, out, tg, ix):
            return torch.cat([out.logits[b, q, t["class_labels"][j]] for b, ((q, j), t) in enumerate(zip(ix, tg))])

    from faap.detector import DetectorOutput
    out = DetectorOutput(probs, probs, probs, [])
    expected = original_image_scores(probs, indices, targets)
    assert expected[2] == 0
    for whole in (False, True):
        det, f, m = group_set_loss(Stub(), out, targets, 2, whole_batch=whole, per_image=True)
        torch.testing.assert_close(torch.cat([f, m]), expected)
        assert det.item() == 5.0  # one loss over five images, or 2 + 3
        _, fq, mq = group_set_loss(Stub(), out, targets, 2, whole_batch=whole)
        assert (len(fq), len(mq)) == (3, 4)  # per query: images 0-1 have 3 matches, images 2-4 have 4
    torch.testing.assert_close(one_way_wasserstein(expected[:2], expected[2:]),
                               original_wasserstein(expected[:2], expected[2:]), rtol=1e-6, atol=1e-7)


def test_head_is_the_originals():
    cfg = make_config("score_contrastive", {})
    var = VARIANTS["score_contrastive"](cfg, 256)
    original = nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 128))
    var.proj_head.load_state_dict({f"net.{k}": v for k, v in original.state_dict().items()})  # same names
    x = torch.randn(6, 10, 256)
    torch.testing.assert_close(var.proj_head(x), F.normalize(original(x.mean(1)), dim=-1, p=2))
    w = var.weight_dict
    assert [w(e)["contrastive"] for e in range(5)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1])
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.weight_decay, cfg.eps_cooldown_epochs, cfg.temperature) == (
        30, 7, "adamw", 0.01, 16, 0.1)


def test_step_matches_the_originals_single_pass():
    """One train_step == the original's loop body: G and DETR once over the batch, one set loss, image scores."""
    from faap.bench import random_batch
    from faap.detector import load_detector
    from faap.engine import current_eps, female_first, train_step
    from faap.generator import PerturbationGenerator, perturb
    from faap.schedules import beta_at

    detector = load_detector("demo")
    batch = random_batch(6, 64, seed=3)
    runs = []
    for use_engine in (True, False):
        torch.manual_seed(0)
        cfg = make_config("score_contrastive", {"bidirectional": True})
        gen, var = PerturbationGenerator(), VARIANTS["score_contrastive"](cfg, detector.hidden_dim)
        # SGD: parameter differences stay proportional to gradient differences (Adam's first step is ~sign(g)).
        opt = torch.optim.SGD(list(gen.parameters()) + var.g_parameters(), lr=1e-2)
        gen.train(), var.train()
        if use_engine:
            logs = train_step(batch, gen, detector, var, opt, 5, torch.device("cpu"))
            total = logs["loss_total"]
        else:
            x, mask, targets, n_f = female_first(batch, "cpu")
            x_adv, _ = perturb(gen, x, mask, current_eps(cfg, 5))
            out = detector(x_adv, mask)
            loss_det, _, indices = detector.set_loss(out, targets)
            image_scores = original_image_scores(detector.class_probs(out.logits), indices, targets)
            loss_c = original_bidirectional(var.proj_head(out.features), image_scores)
            loss_w = original_wasserstein(image_scores[:n_f], image_scores[n_f:])
            total_t = 1.0 * loss_c + 0.2 * loss_w + beta_at(5, 0.5, 0.6, 30) * loss_det
            opt.zero_grad()
            total_t.backward()
            nn.utils.clip_grad_norm_(list(gen.parameters()) + list(var.parameters()), 0.1)
            opt.step()
            total = total_t.item()
        runs.append((total, [p.detach().clone() for p in list(gen.parameters()) + list(var.parameters())]))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)
    for a, b in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert logs["n_positive"] == 2 and logs["n_anchor"] == 2 and 0 <= logs["anchor_female_frac"] <= 1


def test_bad_value_stops_with_one_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "faap.cli", "train", "--variant", "score_contrastive", "--data", tiny_data,
                        "--out", str(out), "--set", "top_k_percent=1.5"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "top_k_percent must be <= 1 (got 1.5)" in r.stderr
    assert not out.exists()


def _ctx(rows):
    """The study's evidence holding only per-epoch records (all these judges read)."""
    return StudyEvidence(pd.DataFrame(rows), Best("trial 0", {}, ()))


def test_tiny_run_logs_its_terms_and_is_judged(tiny_data, tmp_path):
    from analysis.study import _epoch_rows
    from faap.rundir import RunDir
    from faap.trainer import Run

    out = str(tmp_path / "run")
    summary = Run(make_config("score_contrastive", tiny_values(tiny_data, epochs=1)), out, progress=False).fit()
    assert os.path.isfile(os.path.join(out, "summary.json")) and "test" in summary
    (rec,) = RunDir(out).read_metrics()
    for key in ("loss_contrastive", "loss_wass", "loss_det", "n_positive", "n_anchor", "score_gap_within_batch",
                "anchor_female_frac", "positive_female_frac"):
        assert key in rec, key
    assert rec["loss_contrastive"] > 0 and rec["n_positive"] == rec["n_anchor"] == 2  # batch 4: halves
    assert rec["score_gap_within_batch"] > 0  # positives score above anchors by construction
    ctx = _ctx(_epoch_rows(out, "trial 0", 0))
    for h in VARIANTS["score_contrastive"].hypotheses:
        f = h.judge(ctx)
        assert f.verdict in {"supported", "not supported", "inconclusive"}, h.key
        assert f.stats and all(v is None or isinstance(v, (int, float, tuple)) for v in f.stats.values()), h.key
    # one record: no interval, so no verdict either way
    blind = VARIANTS["score_contrastive"].hypotheses[0].judge(ctx)
    assert blind.stats["female_share_difference"] == pytest.approx(rec["anchor_female_frac"] - rec["positive_female_frac"])
    assert blind.verdict == "inconclusive" and blind.stats["female_share_difference_ci"] is None
    # One epoch has nothing to compare the score gap with.
    assert VARIANTS["score_contrastive"].hypotheses[1].judge(ctx).verdict == "inconclusive"


def _records(anchor_f, last_gap, epochs=3):
    """Per-epoch records of one trial run per entry: anchors' female share (positives 0.5) and a within-batch
    score gap falling linearly from 0.30 to ``last_gap``; plus a baseline run the judges must leave out."""
    rows = []
    for run, (share, last) in enumerate(zip(anchor_f, last_gap)):
        for epoch in range(epochs):
            gap = 0.30 + (last - 0.30) * epoch / (epochs - 1)
            for metric, value in (("anchor_female_frac", share + 0.01 * (epoch - 1)), ("positive_female_frac", 0.5),
                                  ("score_gap_within_batch", gap)):
                rows.append({"condition": "trial 0", "run": f"r{run}", "epoch": epoch, "metric": metric, "value": value})
    rows.append({"condition": "adversarial", "run": "b", "epoch": 0, "metric": "anchor_female_frac", "value": 0.0})
    return rows


@pytest.mark.parametrize("anchor_f,last_gap,verdicts", [
    ([0.55, 0.56, 0.54, 0.55], [0.29, 0.295, 0.285, 0.29], ("supported", "supported")),
    ([0.90, 0.92, 0.88, 0.90], [0.15, 0.14, 0.16, 0.15], ("not supported", "not supported")),
    ([0.50, 0.85, 0.50, 0.85], [0.29, 0.10, 0.29, 0.10], ("inconclusive", "inconclusive")),  # runs disagree
])
def test_hypothesis_rules_on_intervals(anchor_f, last_gap, verdicts):
    found = [h.judge(_ctx(_records(anchor_f, last_gap))) for h in VARIANTS["score_contrastive"].hypotheses]
    assert tuple(f.verdict for f in found) == verdicts
    blind, gap = found
    assert blind.stats["female_share_difference"] == pytest.approx(np.mean(anchor_f) - 0.5)
    assert blind.stats["n"] == 12 and blind.stats["n_runs"] == 4 and "runs resampled" in blind.text
    lo, hi = blind.stats["female_share_difference_ci"]
    assert lo <= blind.stats["female_share_difference"] <= hi
    if verdicts[0] == "inconclusive":
        assert lo < H1_MARGIN and hi > H1_CLEAR  # the interval spans both bounds
    assert gap.stats["relative_change"] == pytest.approx(np.mean([g / 0.30 - 1 for g in last_gap]))
    lo, hi = gap.stats["relative_change_ci"]
    assert lo <= gap.stats["relative_change"] <= hi and gap.stats["n_runs"] == 4
    if verdicts[1] == "inconclusive":
        assert lo < -H2_CLEAR and hi > -H2_SHRINK


def test_one_run_intervals():
    """One run: the female share's interval resamples its epochs (and says so); the gap's change has none."""
    blind, gap = (h.judge(_ctx(_records([0.55], [0.29], epochs=6))) for h in VARIANTS["score_contrastive"].hypotheses)
    assert blind.verdict == "supported" and "one run: its epochs resampled" in blind.text
    assert gap.verdict == "inconclusive" and gap.stats["relative_change_ci"] is None and "no interval" in gap.text
