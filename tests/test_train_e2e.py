"""End-to-end runs of each variant on the tiny synthetic benchmark with the demo detector."""

import json
import os

import pytest
import torch

from conftest import tiny_values
from faap.reeval import reevaluate
from faap.trainer import Run
from faap.variants import make_config

REQUIRED = ("epoch", "AP_male", "AP_female", "AP_gap", "AR_male", "AR_female", "AR_gap", "loss_det", "loss_wass",
            "delta_linf", "delta_l2", "obj_score_f", "obj_score_m", "obj_frac_f", "obj_frac_m", "matched_score_f",
            "matched_score_m", "matched_score_gap", "eps", "beta")


def _records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("variant,own_term", [("adversarial", "loss_fair"), ("infonce", "loss_infonce")])
def test_variant_end_to_end(tiny_data, tmp_path, variant, own_term):
    out = str(tmp_path / variant)
    # The adversarial run also checks that a channels_last generator re-evaluates to the same numbers.
    values = tiny_values(tiny_data, channels_last=variant == "adversarial")
    summary = Run(make_config(variant, values), out, progress=False).fit()
    records = _records(out)
    assert [r["epoch"] for r in records] == [0, 1]
    for key in REQUIRED + (own_term,):
        assert key in records[0], key
    if variant == "adversarial":
        assert "d_loss" in records[0]
    for name in ("config.yaml", "summary.json", "eval/val_epoch_0000.json", "eval/val_epoch_0001.json",
                 "checkpoints/epoch_0000.pt", "checkpoints/epoch_0001.pt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.path.isfile(os.path.join(out, f"eval/test_epoch_{summary['selected_epoch']:04d}.json"))
    # The clean detector shows the benchmark's gap (male easier).
    assert summary["baseline"]["test"]["AP_male"] > summary["baseline"]["test"]["AP_female"]
    # Recorded AP equals a direct re-evaluation of the saved checkpoint (with its recorded eps).
    for r in records:
        again = reevaluate(out, r["epoch"], "val", "cpu")
        assert again["eps"] == r["eps"]
        assert again["AP_male"] == r["AP_male"] and again["AP_female"] == r["AP_female"]
        assert again["AR_gap"] == r["AR_gap"]
    test_again = reevaluate(out, None, "test", "cpu")
    assert test_again["AP_gap"] == summary["test"]["AP_gap"]
    with open(os.path.join(out, "config.yaml")) as f:
        text = f.read()
    for key in ("dataset_fingerprint:", "detector_id:", "code_commit:", "seed: 42", f"variant: {variant}"):
        assert key in text


class _Crash(Exception):
    pass


class _CrashAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run, epoch, record):
        if epoch == self.epoch:
            raise _Crash()


def test_resume_is_exact(tiny_data, tmp_path):
    values = tiny_values(tiny_data, epochs=3)
    straight = str(tmp_path / "straight")
    Run(make_config("infonce", values), straight, progress=False).fit()
    resumed = str(tmp_path / "resumed")
    with pytest.raises(_Crash):
        Run(make_config("infonce", values), resumed, progress=False).fit(callbacks=[_CrashAfter(0)])
    with pytest.raises(Exception, match="already holds a run"):
        Run(make_config("infonce", values), resumed, progress=False).fit()
    Run(make_config("infonce", values), resumed, progress=False).fit(resume=True)
    a, b = _records(straight), _records(resumed)
    assert [r["epoch"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b):
        for key in ("loss_total", "loss_infonce", "AP_male", "AP_female", "delta_l2"):
            assert ra[key] == rb[key], (ra["epoch"], key)
    ga = torch.load(os.path.join(straight, "checkpoints/epoch_0002.pt"), weights_only=False)["generator"]
    gb = torch.load(os.path.join(resumed, "checkpoints/epoch_0002.pt"), weights_only=False)["generator"]
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_resume_refuses_a_changed_config(tiny_data, tmp_path):
    out = str(tmp_path / "run")
    Run(make_config("infonce", tiny_values(tiny_data, epochs=1)), out, progress=False).fit()
    with pytest.raises(Exception, match="'temperature' differs"):
        Run(make_config("infonce", tiny_values(tiny_data, epochs=1, temperature=0.2)), out, progress=False).fit(resume=True)


def test_a_recorded_config_re_runs_identically(tiny_data, tmp_path, capsys):
    """`faap train --config RUN/config.yaml --out NEW` (no --variant): the same records, epoch for epoch;
    the recorded fingerprint is checked, and a --variant that contradicts the file is refused in one line."""
    import shutil

    import yaml

    from faap.cli import main

    first = str(tmp_path / "first")
    Run(make_config("adversarial", tiny_values(tiny_data, epochs=2)), first, progress=False).fit()
    recorded = os.path.join(first, "config.yaml")
    with open(recorded) as f:
        saved = yaml.safe_load(f)
    assert saved["threads"] == torch.get_num_threads()  # CPU results depend on it
    from faap.config import PROVENANCE_KEYS, field_names

    # what re-running reads as checks is exactly what the trainer records beside the config values
    assert set(saved) - set(field_names(type(make_config("adversarial", {})))) == set(PROVENANCE_KEYS)
    again = str(tmp_path / "again")
    assert main(["train", "--config", recorded, "--out", again, "--quiet"]) == 0
    a, b = _records(first), _records(again)
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss_total", "loss_fair", "AP_male", "AP_female", "AP_gap", "delta_l2"):
            assert ra[key] == rb[key], (ra["epoch"], key)
    capsys.readouterr()
    assert main(["train", "--config", recorded, "--variant", "infonce", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == f"faap: error: --variant infonce but {recorded} is a 'adversarial' config"
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data, other)
    victim = next((other / "women_split").rglob("*.json"))
    victim.write_text(victim.read_text().replace('"id"', '"id" ', 1))  # same annotations, other bytes
    assert main(["train", "--config", recorded, "--data", str(other), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on" in err[0] and "not the same data" in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize("skip", [True, False])
def test_infonce_skips_exactly_the_single_group_batches(tiny_data, skip):
    """The original InfoNCE skipped every batch without both groups (no G step at all)."""
    from faap.engine import train_one_epoch

    cfg = make_config("infonce", tiny_values(tiny_data, batch_size=2, epoch_samples=16,
                                             skip_incomplete_batches=skip))
    run = Run(cfg, "unused", progress=False)
    run.sampler.set_epoch(0)
    female = set(run.loader.dataset.group_index["female"])
    indices = list(run.sampler)
    batches = [indices[i:i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size)]
    single = sum(len({i in female for i in b}) == 1 for b in batches)
    assert 0 < single < len(batches)  # the seed draws both kinds
    before = [p.detach().clone() for p in run.generator.parameters()]
    logs = train_one_epoch(run.loader, run.generator, run.detector, run.variant, run.opt_g, 0, run.device, False)
    assert logs["skipped_steps"] == (single if skip else 0)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.generator.parameters()))


@pytest.mark.parametrize("variant", ["adversarial", "infonce"])
def test_initial_modules_are_the_trainers(tiny_data, variant):
    """Whoever rebuilds a run's untrained modules (the diagnostics) gets the trainer's exact weights."""
    from faap.runtime import initial_modules

    cfg = make_config(variant, tiny_values(tiny_data, seed=7))
    run = Run(cfg, "unused", progress=False)
    torch.rand(100)  # whatever drew from the RNG since does not matter
    generator, module = initial_modules(cfg, run.detector.hidden_dim)
    for trained, rebuilt in ((run.generator, generator), (run.variant, module)):
        ours, theirs = trained.state_dict(), rebuilt.state_dict()
        assert ours and ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    other, _ = initial_modules(make_config(variant, tiny_values(tiny_data, seed=8)), run.detector.hidden_dim)
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in generator.state_dict().items())
