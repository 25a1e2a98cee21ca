"""The one-pass training step against a re-creation of the original loop structure."""

import pytest
import torch

from faap.bench import legacy_step, random_batch
from faap.detector import load_detector
from faap.engine import train_step
from faap.generator import PerturbationGenerator
from faap.variants import VARIANTS, make_config


@pytest.fixture(scope="module")
def detector():
    return load_detector("demo")


def _setup(detector, variant="adversarial", sgd=False, **over):
    torch.manual_seed(0)
    cfg = make_config(variant, {**({"lr_d": 1e-3} if variant == "adversarial" else {}), **over})
    gen = PerturbationGenerator()
    var = VARIANTS[variant](cfg, detector.hidden_dim)
    var.optimizers = var.make_optimizers()
    params = list(gen.parameters()) + var.g_parameters()
    opt = torch.optim.SGD(params, lr=1e-2) if sgd else torch.optim.Adam(params, lr=1e-3)
    return gen, var, opt


def _params(gen, var):
    return {**{f"g.{k}": v.detach().clone() for k, v in gen.named_parameters()},
            **{f"v.{k}": v.detach().clone() for k, v in var.named_parameters()}}


def _run(step, detector, steps=2, sgd=False, **kw):
    gen, var, opt = _setup(detector, sgd=sgd)
    batch = random_batch(6, 64, seed=3)
    logs = [step(batch, gen, detector, var, opt, 5, torch.device("cpu"), **kw) for _ in range(steps)]
    return _params(gen, var), logs


def test_feature_reuse_is_identical_to_recomputing(detector):
    """k_d = 4 discriminator steps on features computed once == recomputing G and the detector each time."""
    once, logs_once = _run(train_step, detector)
    again, logs_again = _run(legacy_step, detector, per_group=False)
    assert once.keys() == again.keys()
    assert all(torch.equal(once[k], again[k]) for k in once), "parameters differ"
    for a, b in zip(logs_once, logs_again):
        assert a["d_loss"] == b["d_loss"] and a["loss_total"] == b["loss_total"]


def test_batched_detector_forward_matches_per_group(detector):
    """One detector forward over both groups == one per group, up to float summation order (SGD, so
    parameter differences stay proportional to gradient differences)."""
    once, logs_once = _run(train_step, detector, sgd=True)
    per_group, logs_pg = _run(legacy_step, detector, sgd=True, per_group=True)
    for k in once:
        torch.testing.assert_close(once[k], per_group[k], rtol=1e-4, atol=1e-6)
    assert logs_once[0]["loss_total"] == pytest.approx(logs_pg[0]["loss_total"], rel=1e-5)


def test_step_logs_every_diagnostic(detector):
    gen, var, opt = _setup(detector, "infonce")
    logs = train_step(random_batch(4, 64), gen, detector, var, opt, 0, torch.device("cpu"))
    for key in ("loss_det", "loss_wass", "loss_infonce", "loss_total", "delta_linf", "delta_l2", "obj_score_f",
                "obj_frac_m", "matched_score_f", "matched_score_m"):
        assert key in logs, key
    assert logs["delta_linf"] <= 0.05 + 1e-6  # eps at epoch 0, measured before augmentation


def test_nan_loss_raises_before_stepping(detector):
    gen, var, opt = _setup(detector, "infonce")
    with torch.no_grad():
        for p in var.proj_head.parameters():
            p.fill_(float("nan"))
    before = _params(gen, var)
    with pytest.raises(FloatingPointError, match="non-finite"):
        train_step(random_batch(4, 64), gen, detector, var, opt, 0, torch.device("cpu"))
    after = _params(gen, var)
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).all() for k in before)
