"""The 'infonce_gender_aware' variant (the original's train_faap_simclr_infonce_3rd.py): its losses against
a line-by-line transcription of the original, hand-computed values, its config bounds, the engine's
whole-batch switch, a tiny end-to-end run and its hypotheses judged on that run."""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from analysis.evidence import StudyEvidence
from conftest import tiny_values
from faap.evidence import Best
from faap.detector import DetectorOutput
from faap.engine import forward, generator_update, perturb_groups
from faap.generator import perturb
from faap.losses import cross_gender_infonce, gender_aware_infonce, image_level_scores, one_way_wasserstein
from faap.variants import make_config, get_variant
from faap.variants.base import StepState
from faap.variants.infonce_gender_aware import H2_OVERFIT_RISE, H2_STABLE

VARIANT = "infonce_gender_aware"
VERDICTS = {"supported", "not supported", "inconclusive"}


# ---- the original, transcribed (GenderAwareContrastiveLoss.forward, _image_level_detection_score,
# _wasserstein_1d_asymmetric of train_faap_simclr_infonce_3rd.py; info dict and prints left out) ----
def original_contrastive(proj_f, proj_m, scores_f, scores_m, temperature=0.07, score_weight_alpha=1.0):
    n_f = proj_f.size(0)
    n_m = proj_m.size(0)
    if n_f < 2 or n_m < 1:
        return proj_f.new_tensor(0.0)
    scores_f = scores_f.detach()
    scores_m = scores_m.detach()
    sim_f2m = torch.mm(proj_f, proj_m.t()) / temperature
    sim_f2f = torch.mm(proj_f, proj_f.t()) / temperature
    mask_self = torch.eye(n_f, device=proj_f.device, dtype=torch.bool)
    sim_f2f_masked = sim_f2f.masked_fill(mask_self, float('-inf'))
    score_diff = scores_m.unsqueeze(0) - scores_f.unsqueeze(1)
    score_diff_normalized = torch.sigmoid(score_diff * 5)
    weights = 0.5 + score_diff_normalized
    sim_f2m_weighted = sim_f2m + score_weight_alpha * torch.log(weights + 1e-8)
    all_sims = torch.cat([sim_f2m_weighted, sim_f2f_masked], dim=1)
    numerator = torch.logsumexp(sim_f2m_weighted, dim=1)
    denominator = torch.logsumexp(all_sims, dim=1)
    loss_f2m = -(numerator - denominator).mean()
    if n_m >= 2:
        sim_m2f = sim_f2m.t()
        sim_m2m = torch.mm(proj_m, proj_m.t()) / temperature
        mask_m = torch.eye(n_m, device=proj_m.device, dtype=torch.bool)
        sim_m2m_masked = sim_m2m.masked_fill(mask_m, float('-inf'))
        all_sims_m = torch.cat([sim_m2f, sim_m2m_masked], dim=1)
        numerator_m = torch.logsumexp(sim_m2f, dim=1)
        denominator_m = torch.logsumexp(all_sims_m, dim=1)
        loss_m2f = -(numerator_m - denominator_m).mean()
    else:
        loss_m2f = proj_f.new_tensor(0.0)
    return 1.5 * loss_f2m + 0.5 * loss_m2f


def original_image_score(pred_logits, top_k=10):
    probs = pred_logits.softmax(dim=-1)[..., :-1]
    max_probs = probs.max(dim=-1).values
    if top_k > 0 and top_k < max_probs.size(1):
        topk_probs = max_probs.topk(top_k, dim=1).values
        return topk_probs.mean(dim=1)
    return max_probs.mean(dim=1)


def original_wasserstein(female_scores, male_scores):
    if female_scores.numel() == 0 or male_scores.numel() == 0:
        return female_scores.new_tensor(0.0)
    sorted_f = female_scores.sort().values
    sorted_m = male_scores.detach().sort().values
    k = max(sorted_f.numel(), sorted_m.numel())
    if k != sorted_f.numel():
        idx = torch.linspace(0, sorted_f.numel() - 1, k, device=sorted_f.device)
        idx_low, idx_high = idx.floor().long(), idx.ceil().long()
        weight = idx - idx_low
        sorted_f = sorted_f[idx_low] * (1 - weight) + sorted_f[idx_high] * weight
    if k != sorted_m.numel():
        idx = torch.linspace(0, sorted_m.numel() - 1, k, device=sorted_m.device)
        idx_low, idx_high = idx.floor().long(), idx.ceil().long()
        weight = idx - idx_low
        sorted_m = sorted_m[idx_low] * (1 - weight) + sorted_m[idx_high] * weight
    return F.relu(sorted_m - sorted_f).mean()


def _unit(n, d, gen):
    return F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=-1)


# ---- losses against the original ----------------------------------------------------------------------
@pytest.mark.parametrize("n_f,n_m", [(2, 1), (3, 2), (4, 4), (5, 7), (1, 3), (3, 0)])
@pytest.mark.parametrize("temperature,alpha", [(0.07, 1.0), (0.5, 0.0), (0.2, 2.5)])
def test_contrastive_matches_original(n_f, n_m, temperature, alpha):
    gen = torch.Generator().manual_seed(100 * n_f + n_m)
    z_f, z_m = _unit(n_f, 16, gen), _unit(n_m, 16, gen)
    s_f, s_m = torch.rand(n_f, generator=gen, dtype=torch.float64), torch.rand(n_m, generator=gen, dtype=torch.float64)
    ours = gender_aware_infonce(z_f, z_m, s_f, s_m, temperature, alpha)
    ref = original_contrastive(z_f, z_m, s_f, s_m, temperature, alpha)
    assert float(ours) == pytest.approx(float(ref), abs=1e-6, rel=1e-9)
    if n_f >= 2 and n_m >= 1:
        assert float(ref) != 0.0


@pytest.mark.parametrize("q,top_k", [(20, 10), (10, 10), (6, 10), (12, 0), (12, 3)])
def test_image_scores_match_original(q, top_k):
    logits = torch.randn(5, q, 4, generator=torch.Generator().manual_seed(q + top_k), dtype=torch.float64) * 3
    ours = image_level_scores(logits.softmax(-1)[..., :-1], top_k)
    torch.testing.assert_close(ours, original_image_score(logits, top_k), atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_f,n_m", [(4, 4), (3, 7), (7, 3), (1, 5), (5, 1), (0, 3)])
def test_wasserstein_on_image_scores_matches_original(n_f, n_m):
    gen = torch.Generator().manual_seed(7 * n_f + n_m)
    s_f, s_m = torch.rand(n_f, generator=gen, dtype=torch.float64), torch.rand(n_m, generator=gen, dtype=torch.float64)
    # The original's interpolation positions are float32 (torch.linspace's default): ~1e-8 apart.
    assert float(one_way_wasserstein(s_f, s_m)) == pytest.approx(float(original_wasserstein(s_f, s_m)), abs=1e-6)


# ---- hand-computed values ---------------------------------------------------------------------------
def test_contrastive_by_hand():
    z_f = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z_m = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    equal = torch.tensor([0.3, 0.3], dtype=torch.float64)
    # t = 1, equal scores: w = 0.5 + sigmoid(0) = 1, no bias. Anchor 1: pos 1, negative 0 -> log(1 + e^-1);
    # anchor 2: pos 0, negative 0 -> log 2. One male: no M->F term. Total 1.5 * mean.
    expected = 1.5 * (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert float(gender_aware_infonce(z_f, z_m, equal, torch.tensor([0.3], dtype=torch.float64), 1.0)) == \
        pytest.approx(expected, abs=1e-7)
    # A man scoring far above both women: w -> 1.5, the positive's logit + log 1.5.
    w = 1.5
    expected_w = 1.5 * (math.log(1 + math.exp(-1) / w) + math.log(1 + 1 / w)) / 2
    low, high = torch.zeros(2, dtype=torch.float64), torch.tensor([100.0], dtype=torch.float64)
    far = gender_aware_infonce(z_f, z_m, low, high, 1.0)
    assert float(far) == pytest.approx(expected_w, abs=1e-7)


def test_image_scores_and_wasserstein_by_hand():
    probs = torch.tensor([[[0.1, 0.9], [0.5, 0.2], [0.3, 0.3]]])  # query maxima 0.9, 0.5, 0.3
    assert image_level_scores(probs, 2).tolist() == pytest.approx([0.7])
    assert image_level_scores(probs, 0).tolist() == pytest.approx([1.7 / 3])
    # one male 0.5 resampled to [0.5, 0.5]; relu(0.5 - 0.1, 0.5 - 0.3) -> mean 0.3
    assert float(one_way_wasserstein(torch.tensor([0.3, 0.1]), torch.tensor([0.5]))) == pytest.approx(0.3)


def test_alpha_zero_is_the_shared_cross_gender_infonce_and_scores_get_no_gradient():
    gen = torch.Generator().manual_seed(3)
    z_f, z_m = _unit(4, 8, gen), _unit(3, 8, gen)
    s_f, s_m = torch.rand(4, dtype=torch.float64, requires_grad=True), torch.rand(3, dtype=torch.float64)
    plain = cross_gender_infonce(z_f, z_m, 0.1, 1.5, 0.5)
    assert float(gender_aware_infonce(z_f, z_m, s_f, s_m, 0.1, alpha=0.0)) == pytest.approx(float(plain), abs=1e-12)
    loss = gender_aware_infonce(z_f, z_m, s_f, s_m, 0.1, alpha=1.0)
    assert not loss.requires_grad  # s_f requires grad: the loss would too, were the scores not detached


# ---- config -------------------------------------------------------------------------------------------
def test_defaults_are_the_originals():
    cfg = make_config(VARIANT, {})
    assert (cfg.optimizer, cfg.weight_decay, cfg.batch_size, cfg.lr_g, cfg.grad_clip, cfg.epochs) == \
        ("adamw", 0.01, 8, 1e-4, 0.1, 24)
    assert (cfg.eps_start, cfg.eps_peak, cfg.eps_final) == (0.10, 0.10, 0.10)
    assert (cfg.temperature, cfg.score_weight_alpha, cfg.score_top_k, cfg.lambda_infonce, cfg.lambda_wass) == \
        (0.07, 1.0, 10, 1.0, 0.2)
    assert (cfg.beta_start, cfg.beta_final, cfg.aug_strength, cfg.proj_dim) == (0.5, 0.6, "medium", 128)


@pytest.mark.parametrize("setting,message", [("score_weight_alpha=-1", "score_weight_alpha must be >= 0 (got -1"),
                                             ("temperature=0", "temperature must be > 0"),
                                             ("aug_strength=huge", "aug_strength must be one of")])
def test_cli_bad_value_one_line_exit_2(tiny_data, tmp_path, setting, message):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "faap.cli", "train", "--variant", VARIANT, "--data", tiny_data,
                        "--out", str(out), "--set", setting], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not out.exists()


# ---- the engine's whole-batch switch (G, set loss) and the replaced Wasserstein --------------------------------------
class _StubDetector:
    """Logits from the image means; what the engine's G step needs, nothing more (one match per image)."""

    def __init__(self):
        self.set_loss_calls = []

    def __call__(self, x, mask):
        feats = x.mean(dim=(2, 3)).unsqueeze(1).expand(-1, 12, -1).contiguous()  # B x 12 x 3
        logits = feats * torch.linspace(-2, 2, 12).view(1, 12, 1)
        return DetectorOutput(logits, feats[..., :2].repeat(1, 1, 2).sigmoid(), feats, [])

    def set_loss(self, out, targets):
        self.set_loss_calls.append(len(targets))
        return out.boxes.sum() * 0.0, {}, [(torch.tensor([0]), torch.tensor([0]))] * len(targets)

    def matched_scores(self, out, targets, indices):
        return out.logits[:, 0, 0].sigmoid() + 0.25  # anything unlike the image-level scores

    def objectness(self, out):
        return out.logits.sigmoid().max(-1).values

    def class_probs(self, logits):
        return logits.sigmoid()


def _bn_generator():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train()


def test_whole_batch_switch_runs_g_once():
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[:2] += 2.0  # the female rows differ, so per-group and whole-batch statistics differ
    mask = torch.ones(6, 8, 8)
    cfg = make_config(VARIANT, {"aug_strength": "none"})
    ga = get_variant(VARIANT)(cfg, 3)
    _, delta = forward(_bn_generator(), _StubDetector(), ga, x, mask, 2, 0.1)
    torch.testing.assert_close(delta, perturb(_bn_generator(), x, mask, 0.1)[1])
    assert not torch.allclose(delta, perturb_groups(_bn_generator(), x, mask, 2, 0.1)[1])
    other = get_variant("infonce")(make_config("infonce", {"aug_strength": "none"}), 3)
    assert other.whole_batch is False
    _, delta_groups = forward(_bn_generator(), _StubDetector(), other, x, mask, 2, 0.1)
    torch.testing.assert_close(delta_groups, perturb_groups(_bn_generator(), x, mask, 2, 0.1)[1])


def test_generator_step_logs_the_image_level_wasserstein():
    det, x = _StubDetector(), torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ga = get_variant(VARIANT)(make_config(VARIANT, {"score_top_k": 4}), 3)
    x.requires_grad_(True)
    out = det(x, None)
    state = StepState(out=out, n_female=3, epoch=0, extras={"class_probs": det.class_probs})
    opt = torch.optim.SGD(ga.g_parameters(), lr=0.0)
    logs = generator_update(state, [{}] * 6, x.detach() * 0, None, det, ga, opt)
    s = image_level_scores(out.logits.sigmoid(), 4).detach()
    assert logs["loss_wass"] == pytest.approx(float(one_way_wasserstein(s[:3], s[3:])), abs=1e-7)
    matched = det.matched_scores(out, None, None).detach()
    assert logs["loss_wass"] != pytest.approx(float(one_way_wasserstein(matched[:3], matched[3:])))
    assert logs["loss_gender_aware"] > 0
    assert det.set_loss_calls == [6]  # one set loss over the whole batch (the engine's default: one per group)
    assert logs["matched_score_f"] == pytest.approx(float(matched[:3].mean()))
    assert ga.skips(1, 6) and ga.skips(6, 6) and not ga.skips(2, 3)
    det.set_loss_calls.clear()
    other = get_variant("infonce")(make_config("infonce", {}), 3)
    generator_update(StepState(out=det(x, None), n_female=3, epoch=0), [{}] * 6, x.detach() * 0, None, det, other,
                     torch.optim.SGD(other.g_parameters(), lr=0.0))
    assert det.set_loss_calls == [3, 3]


# ---- a tiny run, and the hypotheses judged on it -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    from faap.trainer import Run

    out = str(tmp_path_factory.mktemp("ga") / "run")
    summary = Run(make_config(VARIANT, tiny_values(tiny_data, epochs=1, batch_size=8)), out, progress=False).fit()
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return out, summary, [json.loads(line) for line in f]


def test_end_to_end_logs_its_terms(tiny_run):
    out, summary, records = tiny_run
    assert [r["epoch"] for r in records] == [0]
    rec = records[0]
    for key in ("loss_gender_aware", "loss_wass", "loss_det", "image_score_f", "image_score_m", "image_score_gap",
                "pos_weight", "AP_gap"):
        assert key in rec, key
    # The synthetic benchmark's own config sets a constant budget (0.5) beneath the user's: still flat.
    with open(os.path.join(out, "config.yaml")) as f:
        run_cfg = yaml.safe_load(f)
    assert rec["eps"] == run_cfg["eps_start"] == run_cfg["eps_peak"] == run_cfg["eps_final"]
    assert rec["image_score_gap"] == pytest.approx(rec["image_score_m"] - rec["image_score_f"], abs=1e-6)
    assert 0.5 < rec["pos_weight"] < 1.5 and rec["loss_gender_aware"] > 0
    assert os.path.isfile(os.path.join(out, "summary.json")) and summary["selected_epoch"] == 0


def _ctx(rows):
    """The study's evidence holding only per-epoch records (all these judges read)."""
    return StudyEvidence(pd.DataFrame(rows), Best("trial 0", {}, ()))


def test_hypotheses_judged_on_the_run(tiny_run):
    from analysis.study import _epoch_rows

    out, _, records = tiny_run
    ctx = _ctx(_epoch_rows(out, "trial 0", 0))
    found = {h.key: h.judge(ctx) for h in get_variant(VARIANT).hypotheses}
    assert set(found) == {"score_reversal", "overfit"}
    assert all(f.verdict in VERDICTS for f in found.values())
    rev = found["score_reversal"]
    assert rev.stats["score_gap_mean"] == pytest.approx(records[0]["image_score_gap"])
    # one run of one epoch: one record, no interval, no verdict either way
    assert rev.verdict == "inconclusive" and rev.stats["score_gap_ci"] is None and "no interval" in rev.text
    assert found["overfit"].verdict == "inconclusive" and found["overfit"].stats["rise_median"] == 0.0


def _rows(metric, per_run):
    return [{"condition": "trial 0", "run": run, "epoch": e, "metric": metric, "value": v}
            for run, values in per_run.items() for e, v in enumerate(values)]


def test_reversal_rule_on_intervals_all_three_outcomes():
    judge = {h.key: h for h in get_variant(VARIANT).hypotheses}["score_reversal"].judge
    weights = _rows("pos_weight", {"a": [0.9]})
    neg = _rows("image_score_gap", {"a": [-0.01, -0.012], "b": [-0.007, -0.014], "c": [-0.009, -0.011]})
    f = judge(_ctx(neg + weights))
    assert f.verdict == "supported" and f.stats["score_gap_ci"][1] < 0 and f.stats["n_runs"] == 3
    assert f.stats["score_gap_mean"] == pytest.approx(-0.0105) and "runs resampled" in f.text
    pos = _rows("image_score_gap", {"a": [0.01, 0.012], "b": [0.02, 0.015]})
    assert judge(_ctx(pos + weights)).verdict == "not supported"
    mixed = judge(_ctx(_rows("image_score_gap", {"a": [-0.01, -0.012], "b": [0.02, 0.018]}) + weights))
    lo, hi = mixed.stats["score_gap_ci"]
    assert mixed.verdict == "inconclusive" and lo < 0 < hi and "both signs" in mixed.text
    one = judge(_ctx(_rows("image_score_gap", {"a": [-0.01, -0.012, -0.011]}) + weights))
    assert one.verdict == "supported" and "one run: its epochs resampled" in one.text


def test_overfit_rule_on_intervals_all_three_outcomes():
    judge = {h.key: h for h in get_variant(VARIANT).hypotheses}["overfit"].judge
    rising = {r: [0.11, 0.10, 0.10 + rise] for r, rise in zip("abcd", (0.012, 0.015, 0.02, 0.018))}
    f = judge(_ctx(_rows("AP_gap", rising)))
    assert f.verdict == "supported" and f.stats["rise_median"] == pytest.approx(0.0165)
    assert f.stats["rise_median_ci"][0] > H2_OVERFIT_RISE and f.stats["n_runs"] == 4
    falling = {r: [0.11, 0.10, 0.09 - d] for r, d in zip("abc", (0.0, 0.01, 0.02))}
    f = judge(_ctx(_rows("AP_gap", falling)))
    assert f.verdict == "not supported" and f.stats["rise_median_ci"] == (0.0, 0.0)
    spread = {"a": [0.107, 0.105, 0.105], "b": [0.11, 0.10, 0.12], "c": [0.11, 0.10, 0.1005]}  # runs disagree
    f = judge(_ctx(_rows("AP_gap", spread)))
    lo, hi = f.stats["rise_median_ci"]
    assert f.verdict == "inconclusive" and lo < H2_STABLE and hi > H2_OVERFIT_RISE
    one = judge(_ctx(_rows("AP_gap", {"a": [0.11, 0.10, 0.13]})))  # one run: no interval over runs
    assert one.verdict == "inconclusive" and one.stats["rise_median_ci"] is None and "no interval" in one.text
    short = judge(_ctx(_rows("AP_gap", {r: v[:2] for r, v in rising.items()})))
    assert short.verdict == "inconclusive" and "fewer than 3 epochs" in short.text


def test_bench_steps_run_the_variant():
    """`faap bench` times every registered variant, in the suite's step and the original-loop one."""
    from faap.bench import legacy_step, random_batch
    from faap.detector import load_detector
    from faap.engine import train_step
    from faap.generator import build_generator

    detector, batch = load_detector("demo", "cpu"), random_batch(4, 64)
    for step in (train_step, legacy_step):
        torch.manual_seed(0)
        gen, ga = build_generator(False, torch.device("cpu")), get_variant(VARIANT)(make_config(VARIANT, {}), 128)
        logs = step(batch, gen, detector, ga, torch.optim.Adam(list(gen.parameters()) + ga.g_parameters()), 0, "cpu")
        assert logs["loss_gender_aware"] > 0 and "loss_wass" in logs
