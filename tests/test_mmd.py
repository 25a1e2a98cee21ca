"""The mmd variant: its loss against the original's formula, its config, a tiny run and its hypotheses."""

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_values
from faap.errors import ConfigError
from faap.evidence import Best, Difference, Estimate
from faap.losses import multi_kernel_mmd, pool_queries
from faap.variants import make_config
from faap.variants.base import StepState
from faap.variants.mmd import (H1_ALIGNED, H2_ONE_SIDED, H2_SYMMETRIC, MMD, h1_verdict, h2_verdict, mmd_drop,
                               shift_ratio)

VERDICTS = {"supported", "not supported", "inconclusive"}


def original_mmd_rbf(X, Y, sigma_list=(1.0, 2.0, 4.0, 8.0, 16.0)):
    """train_faap_mmd_1st.py ``_mmd_rbf``, transcribed line by line."""
    if X.size(0) == 0 or Y.size(0) == 0:
        return torch.tensor(0.0, device=X.device)
    if X.dim() == 3:
        X_flat = X.mean(dim=1)
        Y_flat = Y.mean(dim=1)
    else:
        X_flat = X
        Y_flat = Y
    XX = torch.cdist(X_flat, X_flat, p=2).pow(2)
    YY = torch.cdist(Y_flat, Y_flat, p=2).pow(2)
    XY = torch.cdist(X_flat, Y_flat, p=2).pow(2)
    mmd = torch.tensor(0.0, device=X.device)
    for sigma in sigma_list:
        gamma = 1.0 / (2 * sigma**2)
        K_XX = torch.exp(-gamma * XX)
        K_YY = torch.exp(-gamma * YY)
        K_XY = torch.exp(-gamma * XY)
        mmd = mmd + K_XX.mean() + K_YY.mean() - 2 * K_XY.mean()
    return mmd


@pytest.mark.parametrize("n_f,n_m,q,d,scale", [(2, 2, 5, 8, 1.0), (3, 1, 7, 16, 3.0), (1, 1, 4, 4, 0.2),
                                               (4, 3, 10, 32, 10.0)])
def test_mmd_equals_the_original_value_and_gradient(n_f, n_m, q, d, scale):
    g = torch.Generator().manual_seed(n_f * 100 + d)
    feats = (torch.randn(n_f + n_m, q, d, generator=g, dtype=torch.float64) * scale).requires_grad_(True)
    cfg = make_config("mmd", {})
    variant = MMD(cfg, d)
    ours = variant.loss_terms(StepState(out=SimpleNamespace(features=feats), n_female=n_f, epoch=0))["mmd"]
    (grad_ours,) = torch.autograd.grad(ours, feats)
    ref = original_mmd_rbf(feats[:n_f], feats[n_f:])
    (grad_ref,) = torch.autograd.grad(ref, feats)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6) and ref.item() > 0
    assert torch.allclose(grad_ours, grad_ref, atol=1e-6)
    # float32, as in training: the same to 1e-6
    f32 = feats.detach().float()
    assert float(multi_kernel_mmd(pool_queries(f32[:n_f]), pool_queries(f32[n_f:]))) == pytest.approx(
        float(original_mmd_rbf(f32[:n_f], f32[n_f:])), abs=1e-6)


def test_mmd_by_hand():
    a = math.exp(-0.5)
    # one sample each, distance 1, sigma 1: K_XX = K_YY = 1, K_XY = exp(-1/2)
    assert float(multi_kernel_mmd(torch.tensor([[0.0]]), torch.tensor([[1.0]]), [1.0])) == pytest.approx(2 - 2 * a)
    # x = {(0,0), (3,4)} (distance 5), y = {(0,0)}, sigma 5: (2 + 2a)/4 + 1 - 2(1 + a)/2 = (1 - a)/2
    x, y = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0]])
    assert float(multi_kernel_mmd(x, y, [5.0])) == pytest.approx((1 - a) / 2, abs=1e-7)
    # two bandwidths add; equal sets give exactly 0; queries are averaged before the kernel
    assert float(multi_kernel_mmd(x, y, [5.0, 5.0])) == pytest.approx(1 - a, abs=1e-7)
    assert float(multi_kernel_mmd(x, x.clone())) == 0.0
    queries = torch.tensor([[[-1.0, 0.0], [1.0, 0.0]], [[3.0, 2.0], [3.0, 6.0]]])  # means (0,0) and (3,4)
    assert torch.equal(pool_queries(queries), x)
    # a missing group: zero, and the graph is kept (backward works)
    empty, one = torch.zeros(0, 2, requires_grad=True), torch.ones(1, 2, requires_grad=True)
    z = multi_kernel_mmd(empty, one)
    z.backward()
    assert z.item() == 0.0 and torch.equal(one.grad, torch.zeros(1, 2))


def test_detach_male_moves_only_women_as_the_2nd_and_weights():
    feats = torch.randn(4, 3, 8, requires_grad=True)
    for detach, male_moves in ((False, True), (True, False)):
        v = MMD(make_config("mmd", {"detach_male": detach}), 8)
        loss = v.loss_terms(StepState(out=SimpleNamespace(features=feats), n_female=2, epoch=0))["mmd"]
        (grad,) = torch.autograd.grad(loss, feats)
        assert grad[:2].abs().sum() > 0 and (grad[2:].abs().sum() > 0) == male_moves
        if detach:  # the 2nd's _mmd_rbf_asymmetric(X, Y_target): the 1st's formula on Y_target.detach()
            (ref,) = torch.autograd.grad(original_mmd_rbf(feats[:2], feats[2:].detach()), feats)
            assert torch.allclose(grad, ref, atol=1e-6)
    v = MMD(make_config("mmd", {}), 8)
    assert v.weight_dict(0) == v.weight_dict(11) == {"det": 0.5, "wass": 0.2, "mmd": 2.0}


def test_defaults_are_the_originals_and_bounds_hold():
    from faap.engine import current_eps

    cfg = make_config("mmd", {})
    assert (cfg.lambda_mmd, cfg.sigmas, cfg.detach_male) == (2.0, [1.0, 2.0, 4.0, 8.0, 16.0], False)
    shared = (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr_g, cfg.weight_decay, cfg.grad_clip)
    assert shared == (12, 4, "adam", 1e-4, 0.0, 0.1)
    assert (cfg.lambda_wass, cfg.beta_start, cfg.beta_final, cfg.seed) == (0.2, 0.5, 0.5, 42)
    # the 1st's _scheduled_epsilon(epoch, 10, 0.05, 0.10): 0.05 + 0.05 * min(epoch / 9, 1)
    assert [current_eps(cfg, e) for e in range(14)] == pytest.approx([0.05 + 0.05 * min(e / 9, 1) for e in range(14)])
    for values, message in (({"lambda_mmd": -1}, "lambda_mmd must be >= 0"), ({"sigmas": [1.0, 0]}, "sigmas must be"),
                            ({"sigmas": []}, "sigmas must be"), ({"epochs": 0}, "epochs must be > 0")):
        with pytest.raises(ConfigError, match=message):
            make_config("mmd", values)


@pytest.mark.parametrize("setting,message", [("lambda_mmd=-1", "lambda_mmd must be >= 0 (got -1.0)"),
                                             ("sigmas=[2,-1]", "sigmas must be a non-empty list of positive numbers")])
def test_cli_bad_value_one_line_exit_2(tiny_data, tmp_path, setting, message):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "faap.cli", "train", "--variant", "mmd", "--data", tiny_data, "--out",
                        str(out), "--set", setting], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not out.exists()


def _groups(make, n=32, seed=0):
    rng = np.random.default_rng(seed)
    return {g: make(rng, g) for g in ("female", "male")}


def test_mmd_drop_resamples_the_losses_mmd():
    """The drop's value is the loss's own MMD, before and after; its interval comes from resampled images."""
    images = _groups(lambda rng, g: {"clean": rng.normal(size=(12, 8)) + (g == "male"),
                                     "perturbed": rng.normal(size=(12, 8)) + 0.3 * (g == "male")})
    sigmas = [1.0, 4.0]
    mmd = {v: float(multi_kernel_mmd(*(torch.as_tensor(images[g][v]) for g in ("female", "male")), sigmas))
           for v in ("clean", "perturbed")}
    drop = mmd_drop(images, sigmas, 200)
    assert drop["mmd_drop"] == pytest.approx(1 - mmd["perturbed"] / mmd["clean"], rel=1e-6)
    lo, hi = drop["mmd_drop_ci"]
    assert lo < drop["mmd_drop"] < hi and drop == mmd_drop(images, sigmas, 200)  # seeded: the same interval


def test_h1_rule_on_intervals_all_three_outcomes():
    change = lambda value, lo, hi: Difference(value, (lo, hi), (hi - lo) / 2, 0.5, (2, 1))  # noqa: E731
    mmd = {"before": 1.0, "after": 0.5}
    aligned = {"mmd_drop": 0.5, "mmd_drop_ci": (0.4, 0.6)}
    verdict, stats = h1_verdict(mmd, aligned, change(0.002, -0.005, 0.01), 0.1)  # rules out a shrink of 0.01
    assert verdict == "supported" and stats["carried_by"] == "gap_change" and stats["mmd_drop_ci"] == (0.4, 0.6)
    assert stats["gap_change"] == 0.002 and stats["gap_change_ci"] == [-0.005, 0.01]
    assert stats["meaningful_shrink"] == pytest.approx(0.01)
    assert h1_verdict(mmd, aligned, change(-0.03, -0.05, -0.01), 0.1)[0] == "not supported"  # shrank distinguishably
    # a point estimate above zero with an interval wide enough for a real shrink says nothing
    assert h1_verdict(mmd, aligned, change(0.01, -0.04, 0.06), 0.1)[0] == "inconclusive"
    # alignment not shown (the drop's interval reaches below 20%, or there is none): the MMD carries it
    for unsure in ({"mmd_drop": 0.3, "mmd_drop_ci": (0.1, 0.5)}, {"mmd_drop": 0.5, "mmd_drop_ci": None}):
        verdict, stats = h1_verdict(mmd, unsure, change(-0.03, -0.05, -0.01), 0.1)
        assert verdict == "inconclusive" and stats["carried_by"] == "mmd_drop"
    assert H1_ALIGNED == 0.2


def _shifted(female, male, n=32, dim=256):
    """Per-image features whose perturbation moves each group by about the given fraction."""
    return _groups(lambda rng, g: (lambda c: {"clean": c, "perturbed": c + (female if g == "female" else male)
                                              * rng.normal(size=c.shape)})(rng.normal(size=(n, dim))))


def test_h2_rule_on_intervals_all_three_outcomes():
    for female, male, verdict in ((0.1, 0.1, "supported"), (0.2, 0.05, "not supported"), (0.1, 0.065, "inconclusive")):
        m = shift_ratio(_shifted(female, male), 300)
        assert h2_verdict(m) == verdict, (female, male, m)
        assert m["male_to_female"] == pytest.approx(m["shift_male"] / m["shift_female"])
        assert m["male_to_female_ci"][0] < m["male_to_female"] < m["male_to_female_ci"][1]
    lo, hi = shift_ratio(_shifted(0.1, 0.065), 300)["male_to_female_ci"]
    assert H2_ONE_SIDED <= lo and hi < H2_SYMMETRIC  # inconclusive: wholly between the two bounds
    few = shift_ratio(_shifted(0.1, 0.07, n=4, dim=4), 300)  # few small images: an interval across a bound
    assert few["male_to_female_ci"][0] < H2_SYMMETRIC <= few["male_to_female_ci"][1] and h2_verdict(few) == "inconclusive"
    unmoved = _shifted(0.0, 0.06)
    assert shift_ratio(unmoved) == {"shift_female": 0.0, "shift_male": pytest.approx(0.06, rel=0.05),
                                    "male_to_female": None, "male_to_female_ci": None}
    assert h2_verdict(shift_ratio(unmoved)) == "inconclusive"


def test_tiny_run_logs_mmd_and_is_judged(tiny_data, tmp_path):
    from analysis.diagnostics import feature_diagnostics
    from faap.rundir import RunDir
    from faap.trainer import Run

    out = str(tmp_path / "mmd")
    cfg = make_config("mmd", tiny_values(tiny_data, epochs=1))
    summary = Run(cfg, out, progress=False).fit()
    (record,) = RunDir(out).read_metrics()
    # the synthetic data's own settings set its eps (0.5); beta stays the 1st's constant
    assert summary["selected_epoch"] == 0 and record["eps"] == cfg.eps_start == 0.5 and record["beta"] == 0.5
    assert record["loss_mmd"] > 0 and record["skipped_steps"] == 0
    # epoch means are linear: the logged total is the weighted sum of the logged terms
    assert record["loss_total"] == pytest.approx(0.5 * record["loss_det"] + 0.2 * record["loss_wass"]
                                                 + 2.0 * record["loss_mmd"], rel=1e-5)

    diag = feature_diagnostics(out, n_images=6)
    change = Difference(0.01, (-0.02, 0.04), 0.03, 0.5, (1, 1))

    class Evidence:  # the two comparisons H1 asks for, and the run's features (and per image)
        best = Best("trial0", {}, (out,))

        def features(self):
            return diag

        def image_features(self):
            return diag.images

        def difference(self, split, a, b, metric="AP_gap"):
            assert (split, a, b, metric) == ("test", "trial0", "clean", "AP_gap")
            return change

        def condition(self, split, name, metric="AP_gap"):
            assert (split, name, metric) == ("test", "clean", "AP_gap")
            return Estimate(0.3, (0.25, 0.35))

    assert diag["mmd"]["before"] > 0 and diag["mmd"]["after"] > 0 and diag["mmd"]["sigmas"] == list(cfg.sigmas)
    assert {g: {k: v.shape for k, v in a.items()} for g, a in diag.images.items()} == {
        g: {k: (diag["n_images"][g], 128) for k in ("clean", "perturbed", "view_a", "view_b")} for g in diag.images}
    h1, h2 = (h.judge(Evidence()) for h in MMD.hypotheses)
    assert {h1.verdict, h2.verdict} <= VERDICTS
    # the per-image features give back the measured MMD and shifts (float32 there, float64 here)
    assert h1.stats["mmd_drop"] == pytest.approx(1 - diag["mmd"]["after"] / diag["mmd"]["before"], abs=1e-4)
    assert h1.stats["gap_change_ci"] == [-0.02, 0.04] and h1.stats["clean_test_AP_gap"] == 0.3
    drop = mmd_drop(diag.images, cfg.sigmas)
    assert (h1.verdict, h1.stats) == h1_verdict(diag["mmd"], drop, change, 0.3)
    assert "95% CI [-0.020, +0.040]" in h1.text and "verdict carried by the " in h1.text
    assert h2.stats["male_to_female"] == pytest.approx(diag["feature_shift"]["male"] / diag["feature_shift"]["female"],
                                                       rel=1e-4)
    assert h2.stats["shift_female"] > 0 and h2.verdict == h2_verdict(shift_ratio(diag.images))
    assert h2.where == "6 female and 6 male validation images resampled"
