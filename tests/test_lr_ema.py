"""G's learning-rate schedule and EMA: declared by the config, stepped, checkpointed, evaluated."""

import json
import math
import os

import pytest
import torch

from conftest import tiny_values
from faap.ema import EMA
from faap.reeval import reevaluate
from faap.schedules import warmup_cosine_factor
from faap.trainer import Run
from faap.variants import VARIANTS, make_config
from test_train_e2e import _Crash, _CrashAfter


def _records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _fix10_lr_lambda(epoch, lr_warmup_epochs=3, epochs=24):
    """fix10 / fix11-conditional's ``lr_lambda``, line by line."""
    if epoch < lr_warmup_epochs:
        return (epoch + 1) / lr_warmup_epochs
    progress = (epoch - lr_warmup_epochs) / max(1, epochs - lr_warmup_epochs)
    return 0.1 + 0.9 * (1 + torch.cos(torch.tensor(progress * 3.14159265)).item()) / 2


def test_warmup_cosine_is_the_originals_lambda():
    for epoch in range(24):
        assert warmup_cosine_factor(epoch, 3, 24, 0.1) == pytest.approx(_fix10_lr_lambda(epoch), rel=1e-6)


def _lrs(records):
    return [r["lr_g"] for r in records]


def test_the_trainer_steps_the_schedule_per_epoch_and_logs_it(tiny_data, tmp_path):
    """fix11-contrastive's CosineAnnealingLR(T_max=epochs, eta_min=0.1 lr) stepped after each epoch; the
    records also carry the per-group perturbation norms."""
    values = tiny_values(tiny_data, epochs=3, lr_g=1e-3, lr_schedule="cosine")
    Run(make_config("infonce", values), str(tmp_path / "run"), progress=False).fit()
    records = _records(str(tmp_path / "run"))
    expected = [1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert _lrs(records) == pytest.approx(expected, rel=1e-9)
    for key in ("delta_linf_f", "delta_linf_m", "delta_l2_f", "delta_l2_m"):
        assert all(r[key] > 0 for r in records), key


def test_a_per_step_schedule_moves_within_the_epoch(tiny_data):
    cfg = make_config("infonce", tiny_values(tiny_data, lr_g=1e-3, lr_schedule="warmup_cosine", lr_warmup_epochs=1,
                                             lr_step_every="step", skip_incomplete_batches=False))
    run = Run(cfg, "unused", progress=False)
    steps, seen = len(run.loader), []
    hooks = run.step_hooks()
    hooks["after_step"].append(lambda: seen.append(run.opt_g.param_groups[0]["lr"]))  # the lr of the step taken
    from faap.engine import train_one_epoch

    for epoch in range(2):
        run.sampler.set_epoch(epoch)
        train_one_epoch(run.loader, run.generator, run.detector, run.variant, run.opt_g, epoch, run.device, False,
                        **hooks)
    total = 2 * steps
    assert seen == pytest.approx([1e-3 * warmup_cosine_factor(u, steps, total, 0.1) for u in range(total)], rel=1e-9)


def test_resume_with_a_schedule_and_an_ema_is_exact(tiny_data, tmp_path):
    values = tiny_values(tiny_data, epochs=3, lr_g=1e-3, lr_schedule="warmup_cosine", lr_warmup_epochs=1,
                         ema_decay=0.5)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    Run(make_config("infonce", values), straight, progress=False).fit()
    with pytest.raises(_Crash):
        Run(make_config("infonce", values), resumed, progress=False).fit(callbacks=[_CrashAfter(0)])
    # A run recorded before a setting existed had its default: it resumes (and a changed value is refused).
    recorded = os.path.join(resumed, "config.yaml")
    with open(recorded) as f:
        text = f.read()
    with open(recorded, "w") as f:
        f.write("".join(line for line in text.splitlines(True) if not line.startswith(("sampler:", "lr_step_every:"))))
    with pytest.raises(Exception, match="'sampler' differs"):
        Run(make_config("infonce", {**values, "sampler": "natural"}), resumed, progress=False).fit(resume=True)
    Run(make_config("infonce", values), resumed, progress=False).fit(resume=True)
    a, b = _records(straight), _records(resumed)
    assert [r["epoch"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b):
        for key in ("lr_g", "loss_total", "AP_male", "AP_female", "delta_l2"):
            assert ra[key] == rb[key], (ra["epoch"], key)
    sa, sb = (torch.load(os.path.join(d, "checkpoints/epoch_0002.pt"), weights_only=False) for d in (straight, resumed))
    for part in ("generator", "variant", "ema"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part]), part


def test_ema_follows_the_originals_update_and_covers_the_g_side():
    torch.manual_seed(0)
    cfg = make_config("infonce", {})
    generator, variant = torch.nn.Linear(3, 2), VARIANTS["infonce"](cfg, 8)
    ema = EMA(generator, variant, 0.9)
    assert {k.split(".")[0] for k in ema.shadow} == {"generator", "variant"}
    assert {k for k in ema.shadow if k.startswith("variant.")} == {
        f"variant.{n}" for n, p in variant.named_parameters() if any(p is q for q in variant.g_parameters())}
    shadow = {n: p.detach().clone() for n, p in generator.named_parameters()}  # the originals' EMAModel
    for _ in range(3):
        with torch.no_grad():
            for p in generator.parameters():
                p.add_(torch.randn_like(p))
        ema.update()
        for n, p in generator.named_parameters():
            shadow[n].mul_(0.9).add_(p.data, alpha=1 - 0.9)
    averaged = ema.averaged("generator", generator)
    assert all(torch.equal(averaged[n], shadow[n]) for n in shadow)
    assert not torch.equal(averaged["weight"], generator.weight)


def test_evaluation_and_faap_eval_use_the_ema_weights(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    run = Run(make_config("infonce", tiny_values(tiny_data, epochs=1, ema_decay=0.5)), out, progress=False)
    evaluated, run_val = [], run.val.run

    def spy(generator=None, *args, **kw):  # the clean baseline passes no generator
        if generator is not None:
            evaluated.append({n: v.clone() for n, v in generator.state_dict().items()})
        return run_val(generator, *args, **kw)

    run.val.run = spy
    run.fit()
    state = torch.load(os.path.join(out, "checkpoints/epoch_0000.pt"), weights_only=False)
    assert all(torch.equal(evaluated[0][k], state["generator"][k]) for k in state["generator"])  # the EMA's
    live = state["live"]["generator"]
    assert any(not torch.equal(live[k], state["generator"][k]) for k in live if "running" not in k)
    assert all(torch.equal(live[k], state["generator"][k]) for k in live if "running" in k)  # buffers: G's own
    record = _records(out)[0]
    again = reevaluate(out, 0, "val", "cpu")  # faap eval reads the checkpoint's generator: the EMA's
    assert again["AP_male"] == record["AP_male"] and again["AP_female"] == record["AP_female"]
