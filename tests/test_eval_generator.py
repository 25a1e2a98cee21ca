"""``faap eval --generator``: an original generator checkpoint judged into a run folder that the run
re-evaluation and the paired bootstrap read like a trained run's."""

import json
import os

import pytest
import torch

from analysis.bootstrap import bootstrap_gap, match_table
from faap.cli import main
from faap.data.coco import load_split
from faap.evaluate import read_detections, summarize
from faap.generator import PerturbationGenerator
from faap.reeval import reevaluate

SETTINGS = ["--set", "eval_size=128", "--set", "max_size=128"]


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    """A 7th-style checkpoint as the original's training script saves it (random G weights)."""
    torch.manual_seed(1)
    gen = PerturbationGenerator()
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    args = {"epsilon": 0.05, "epsilon_final": 0.10, "epsilon_min": 0.09, "epsilon_warmup_epochs": 8,
            "epsilon_hold_epochs": 6, "epsilon_cooldown_epochs": 10}
    path = str(tmp_path_factory.mktemp("orig") / "epoch_0023.pth")
    torch.save({"epoch": 23, "generator": gen.state_dict(), "discriminator": {}, "opt_g": {}, "opt_d": {},
                "args": args}, path)
    return path


def _eval(ckpt, data, out, *extra):
    return main(["eval", "--generator", ckpt, "--data", data, "--detector", "demo", "--split", "test",
                 "--out", out, "--device", "cpu", *SETTINGS, *extra])


def test_judged_checkpoint_is_a_run_folder(original_checkpoint, tiny_data, tmp_path, capsys):
    out = str(tmp_path / "judged")
    assert _eval(original_checkpoint, tiny_data, out, "--eps", "0.09") == 0
    assert "AP gap" in capsys.readouterr().out
    with open(os.path.join(out, "eval", "test_epoch_0023.json")) as f:
        record = json.load(f)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert record["hyperparams"] == {"epsilon": 0.09, "generator_checkpoint": os.path.abspath(original_checkpoint)}
    assert summary["variant"] == "adversarial" and summary["checkpoint_format"] == "original"
    assert summary["scheduled_eps"] == pytest.approx(0.09)
    assert record["gaps"]["AP"]["perturbed"] == summary["test"]["AP_gap"]
    # The same numbers again through the run-folder re-evaluation (its copied checkpoint and eps).
    again = reevaluate(out, None, "test", "cpu")
    assert again["eps"] == 0.09 and again["AP_gap"] == summary["test"]["AP_gap"]
    # Paired bootstrap between the judged run and the clean detector, as reports read them.
    groups = load_split(tiny_data, "test")
    male, female = {}, {}
    for name, path in (("judged", os.path.join(out, "eval", "test_detections.json.gz")),
                       ("clean", summary["clean_detections"]["test"])):
        saved = read_detections(path)
        for group, store in (("male", male), ("female", female)):
            store[name] = [match_table(groups[group].coco, saved["detections"][group], saved["image_ids"][group])]
    boot = bootstrap_gap(male, female, replicates=50)
    assert boot["conditions"]["judged"]["AP_gap"]["value"] == pytest.approx(summary["test"]["AP_gap"], abs=1e-9)
    assert boot["conditions"]["clean"]["AP_gap"]["value"] == pytest.approx(summary["baseline"]["test"]["AP_gap"], abs=1e-9)
    assert summarize(record["details"]["perturbed"])["AP_gap"] == summary["test"]["AP_gap"]


def _suite_checkpoint(tmp_path, eps=0.07):
    from faap import checkpoint as ckpt

    torch.manual_seed(2)
    config = {"variant": "infonce", "perturb_padding": False, "eval_size": 128, "max_size": 128}
    return ckpt.save_generator(str(tmp_path / "suite_run"), 11, eps, PerturbationGenerator(), config)


def test_suite_checkpoint_uses_its_recorded_eps_and_settings(tiny_data, tmp_path):
    out = str(tmp_path / "judged")
    assert _eval(_suite_checkpoint(tmp_path), tiny_data, out) == 0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["eps"] == 0.07 and summary["checkpoint_format"] == "faap" and summary["variant"] == "infonce"
    with open(os.path.join(out, "config.yaml")) as f:
        assert "perturb_padding: false" in f.read()
    assert os.path.isfile(os.path.join(out, "eval", "test_epoch_0011.json"))


@pytest.mark.parametrize("case", ["missing", "layout", "no_eps", "zero_eps", "huge_eps", "not_empty", "suite_eps"])
def test_bad_input_is_one_line_and_writes_nothing(original_checkpoint, tiny_data, tmp_path, capsys, case):
    ckpt, out, eps = original_checkpoint, str(tmp_path / "out"), ["--eps", "0.09"]
    if case == "missing":
        ckpt = str(tmp_path / "nope.pth")
    elif case == "layout":
        ckpt = str(tmp_path / "odd.pth")
        torch.save({"generator": {"enc1.0.weight": torch.zeros(32, 3, 3, 3)}}, ckpt)
    elif case == "no_eps":
        eps = []
    elif case in ("zero_eps", "huge_eps"):
        eps = ["--eps", "0" if case == "zero_eps" else "8"]
    elif case == "suite_eps":
        ckpt = _suite_checkpoint(tmp_path)
    else:
        os.makedirs(out)
        open(os.path.join(out, "keep.txt"), "w").close()
    before = sorted(os.listdir(tmp_path))
    assert _eval(ckpt, tiny_data, out, *eps) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("faap: error: "), err
    assert sorted(os.listdir(tmp_path)) == before
    if case == "no_eps":
        assert "0.09" in err  # names the eps the original's schedule gave at that epoch
    if case == "not_empty":
        assert os.listdir(out) == ["keep.txt"]
