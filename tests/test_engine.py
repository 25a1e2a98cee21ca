"""The one-pass training step against a re-creation of the original loop structure."""

import pytest
import torch

from faap.bench import legacy_step, random_batch
from faap.detector import load_detector
from faap.engine import female_first, forward, train_step
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


def _buffers(gen):
    return {k: v.detach().clone() for k, v in gen.named_buffers()}


def _iterate(step, detector, batches, **over):
    gen, var, opt = _setup(detector, **over)
    for b in batches:
        step(b, gen, detector, var, opt, 5, torch.device("cpu"))
    return gen, var


def _batches():
    """Three mixed batches and one male-only batch (then only the male passes update BatchNorm)."""
    out = [random_batch(6, 64, seed=s) for s in (3, 4, 5)]
    male_only = random_batch(4, 64, seed=6)
    male_only["groups"] = torch.zeros(4, dtype=torch.long)
    return out + [male_only]


def test_batchnorm_running_stats_match_the_original_loop(detector):
    """The original recomputed G in train mode for each of the k_d = 4 discriminator steps (female
    then male), so G's BatchNorm running statistics got k_d + 1 updates per group per iteration. The
    one-pass step replays them; the reference is the original loop structure (bench's legacy_step,
    which really recomputes G and the detector k_d times)."""
    batches = _batches()
    gen, var = _iterate(train_step, detector, batches)
    ref, ref_var = _iterate(lambda *a: legacy_step(*a, per_group=False), detector, batches)
    ours, theirs = _buffers(gen), _buffers(ref)
    assert ours.keys() == theirs.keys()
    worst = max((ours[k].double() - theirs[k].double()).abs().max().item() for k in ours)
    assert worst <= 1e-6, worst
    # 3 mixed batches x 2 groups x (k_d + 1) passes + one male-only batch x (k_d + 1)
    assert int(gen.down1.net[1].num_batches_tracked) == 3 * 2 * 5 + 5
    a, b = _params(gen, var), _params(ref, ref_var)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    # Without the replay the statistics are visibly those of one pass per group.
    one_pass = _buffers(_iterate(train_step, detector, batches, replay_bn_updates=False)[0])
    assert max((one_pass[k].double() - theirs[k].double()).abs().max().item()
               for k in ours if "running" in k) > 1e-3


@pytest.mark.parametrize("perturb_padding", [True, False])
def test_training_forward_perturbs_padding_as_configured(detector, perturb_padding):
    gen, var, _ = _setup(detector, perturb_padding=perturb_padding)
    batch = random_batch(4, 64, seed=2)
    batch["pixel_mask"][1:, 48:, :] = 0  # rows 1-3 padded at the bottom
    batch["pixel_values"][1:, :, 48:, :] = 0
    x, mask, _, n_female = female_first(batch, torch.device("cpu"))
    _, delta = forward(gen, detector, var, x, mask, n_female, 0.1)
    pad = (mask == 0).unsqueeze(1).expand_as(delta)
    assert delta[~pad].abs().max() > 0
    assert (delta[pad].abs().max() > 0) == perturb_padding


def test_step_logs_the_perturbation_norms_per_group(detector):
    """delta_linf_f / _m and delta_l2_f / _m: each group's mean over its own images (fix11's intended
    delta_linf_m << delta_linf_f is judged on them); a group absent from the batch logs nothing."""
    batch = random_batch(6, 64, seed=3)
    x, mask, _, n_female = female_first(batch, torch.device("cpu"))
    assert 0 < n_female < 6
    gen, var, _ = _setup(detector)
    _, delta = forward(gen, detector, var, x, mask, n_female, 0.05)
    gen, var, opt = _setup(detector)  # the same initial weights
    logs = train_step(batch, gen, detector, var, opt, 0, torch.device("cpu"))
    d = delta.flatten(1)
    for tag, rows in (("f", slice(0, n_female)), ("m", slice(n_female, None))):
        assert logs[f"delta_linf_{tag}"] == pytest.approx(d[rows].abs().max(1).values.mean().item(), rel=1e-6)
        assert logs[f"delta_l2_{tag}"] == pytest.approx(d[rows].norm(dim=1).mean().item(), rel=1e-6)
    assert logs["delta_linf_f"] != logs["delta_linf_m"]
    male_only = random_batch(4, 64, seed=6)
    male_only["groups"] = torch.zeros(4, dtype=torch.long)
    logs = train_step(male_only, gen, detector, var, opt, 0, torch.device("cpu"))
    assert "delta_linf_m" in logs and "delta_linf_f" not in logs and "delta_l2_f" not in logs


# ---- plug points: clean outputs, per-group detection terms, the training score gap ----
def _toy(name, **attrs):
    """A registered toy variant that records the StepState it sees (popped from the registry by the caller)."""
    from faap.variants.base import Variant

    def loss_terms(self, state):
        self.seen = state
        return {}

    return type(name.title(), (Variant,), {"name": name, "loss_terms": loss_terms, **attrs})


@pytest.fixture
def toy_variant():
    from faap.variants.base import REGISTRY

    made = []
    yield lambda name, **attrs: made.append(name) or _toy(name, **attrs)
    for name in made:
        REGISTRY.pop(name, None)


def test_clean_outputs_reach_the_step_only_when_asked(detector, toy_variant):
    batch = random_batch(6, 64, seed=3)
    x, mask, _, _ = female_first(batch, torch.device("cpu"))
    want = detector(x, mask)
    for name, asks in (("toy_clean_yes", True), ("toy_clean_no", False)):
        toy_variant(name, needs_clean_outputs=asks)
        gen, var, opt = _setup(detector, name)
        calls = []
        hook = detector.register_forward_hook(lambda *a: calls.append(1))
        try:
            train_step(batch, gen, detector, var, opt, 0, torch.device("cpu"))
        finally:
            hook.remove()
        clean = var.seen.clean
        assert len(calls) == (2 if asks else 1)  # no extra forward for a variant that does not ask
        if asks:
            torch.testing.assert_close(clean.logits, want.logits)
            torch.testing.assert_close(clean.features, want.features)
            assert not clean.features.requires_grad
        else:
            assert clean is None


def test_per_group_detection_terms_with_their_own_weights_and_one_generator_pass(detector, toy_variant):
    batch = random_batch(6, 64, seed=3)
    x, mask, targets, n_female = female_first(batch, torch.device("cpu"))
    toy_variant("toy_det_split", whole_batch=True, group_det_terms=True,
                weight_dict=lambda self, epoch: {"det_f": 2.0, "det_m": 0.25, "wass": 0.0})
    gen, var, _ = _setup(detector, "toy_det_split")
    out, _ = forward(gen, detector, var, x, mask, n_female, 0.05)
    expect = [detector.set_loss(out.select(s), targets[s])[0].item()
              for s in (slice(0, n_female), slice(n_female, 6))]
    gen, var, opt = _setup(detector, "toy_det_split")  # the same initial weights
    passes = []
    hook = gen.register_forward_hook(lambda *a: passes.append(a[1][0].shape[0]))
    try:
        logs = train_step(batch, gen, detector, var, opt, 0, torch.device("cpu"))
    finally:
        hook.remove()
    assert passes == [6]  # G once over the whole batch
    assert "loss_det" not in logs
    assert [logs["loss_det_f"], logs["loss_det_m"]] == pytest.approx(expect, rel=1e-5)
    assert logs["loss_total"] == pytest.approx(2.0 * expect[0] + 0.25 * expect[1], rel=1e-5)
    toy_variant("toy_det_split_default", group_det_terms=True)  # the base weights: beta for both groups
    beta = make_config("toy_det_split_default", {}).beta_start
    assert VARIANTS["toy_det_split_default"](make_config("toy_det_split_default", {}), 8).weight_dict(0) == {
        "det_f": beta, "det_m": beta, "wass": 0.2}


def test_step_logs_the_training_score_gap(detector):
    """train_score_f/m: each group's mean image-level score (top-k query scores, as fix10/fix11 logged
    score_gap), train_score_gap = men minus women; a one-group batch logs no gap."""
    from faap.losses import image_level_scores

    batch = random_batch(6, 64, seed=3)
    x, mask, _, n_female = female_first(batch, torch.device("cpu"))
    gen, var, _ = _setup(detector, "infonce", score_top_k=3)
    out, _ = forward(gen, detector, var, x, mask, n_female, 0.05)
    s = image_level_scores(detector.class_probs(out.logits), 3)
    gen, var, opt = _setup(detector, "infonce", score_top_k=3)
    logs = train_step(batch, gen, detector, var, opt, 0, torch.device("cpu"))
    assert logs["train_score_f"] == pytest.approx(s[:n_female].mean().item(), rel=1e-5)
    assert logs["train_score_m"] == pytest.approx(s[n_female:].mean().item(), rel=1e-5)
    assert logs["train_score_gap"] == pytest.approx(logs["train_score_m"] - logs["train_score_f"])
    male_only = random_batch(4, 64, seed=6)
    male_only["groups"] = torch.zeros(4, dtype=torch.long)
    gen, var, opt = _setup(detector, "adversarial")
    logs = train_step(male_only, gen, detector, var, opt, 0, torch.device("cpu"))
    assert "train_score_m" in logs and "train_score_gap" not in logs


def test_after_step_hook_and_matched_scores_reach_the_variant(detector, toy_variant):
    """A DINO-style variant: its teacher follows the head after every G step (a skipped batch: no step, no
    call), and its loss reads the per-query matched scores of each group with their graph."""
    from faap.engine import group_set_loss

    toy_variant("toy_after_step", after_generator_step=lambda self: setattr(self, "calls", self.calls + 1),
                calls=0, skips=lambda self, n_female, n: n_female == 0)
    batch = random_batch(6, 64, seed=3)
    x, mask, targets, n_female = female_first(batch, torch.device("cpu"))
    gen, var, _ = _setup(detector, "toy_after_step")
    out, _ = forward(gen, detector, var, x, mask, n_female, 0.05)
    _, want_f, want_m = group_set_loss(detector, out, targets, n_female)
    gen, var, opt = _setup(detector, "toy_after_step")
    train_step(batch, gen, detector, var, opt, 0, torch.device("cpu"))
    got_f, got_m = var.seen.extras["matched_scores"]
    torch.testing.assert_close(got_f, want_f)
    torch.testing.assert_close(got_m, want_m)
    assert got_f.requires_grad and var.calls == 1
    male_only = random_batch(4, 64, seed=6)
    male_only["groups"] = torch.zeros(4, dtype=torch.long)
    assert train_step(male_only, gen, detector, var, opt, 0, torch.device("cpu")) is None and var.calls == 1
