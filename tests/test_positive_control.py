"""The synthetic benchmark's positive control: a bias that a perturbation within the budget can undo.

Female images sit behind a grey veil (contrast halved); the demo detector never saw it (it
was trained with ``--female-veil 1``). A hand-written perturbation that lifts the veil,
clipped to the benchmark's eps and applied to female images only, must shrink the AP gap:
if it did not, no training method could be shown to work on this benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faap.config import DATASET_CONFIG, read_config_file
from faap.data.synth import VEIL_GREY, SynthConfig, generate, oracle_delta, render
from faap.data.transforms import normalize
from faap.variants import make_config


@pytest.fixture(scope="module")
def control_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("control") / "data"
    generate(str(root), SynthConfig(n_train=8, n_val=4, n_test=120), workers=2, progress=False)
    return str(root)


def test_veil_halves_female_contrast_only():
    cfg = SynthConfig()
    plain = SynthConfig()
    plain.female.veil = 1.0
    for i in range(5):
        veiled, boxes = render(cfg, "test", "female", i)
        clear, boxes_clear = render(plain, "test", "female", i)
        assert boxes == boxes_clear  # same scene, only the veil differs
        spread = np.abs(clear.astype(float) / 255 - VEIL_GREY)
        assert np.allclose(np.abs(veiled.astype(float) / 255 - VEIL_GREY), 0.5 * spread, atol=2.5 / 255)
    assert np.array_equal(render(cfg, "test", "male", 0)[0], render(plain, "test", "male", 0)[0])


def test_oracle_lifts_the_veil_within_the_budget():
    cfg = SynthConfig()
    plain = SynthConfig()
    plain.female.veil = 1.0
    veiled = normalize(torch.from_numpy(render(cfg, "val", "female", 3)[0]).permute(2, 0, 1)[None].float() / 255)
    clear = normalize(torch.from_numpy(render(plain, "val", "female", 3)[0]).permute(2, 0, 1)[None].float() / 255)
    unlimited = oracle_delta(veiled, 0.5, eps=100.0)
    assert torch.allclose(veiled + unlimited, clear, atol=0.05)  # undoes the veil (up to 8-bit rounding)
    assert oracle_delta(veiled, 0.5, eps=0.5).abs().max() <= 0.5


def test_dataset_carries_its_settings(control_data):
    settings = read_config_file(f"{control_data}/{DATASET_CONFIG}")
    cfg = make_config("infonce", {"data": control_data})
    assert cfg.eval_size == settings["eval_size"] == 128 and cfg.train_scales == [128] and not cfg.random_crop
    assert cfg.eps_peak == settings["eps_peak"]
    assert make_config("infonce", {"data": control_data, "eval_size": 96}).eval_size == 96  # the user's values win


def test_oracle_perturbation_reduces_the_clean_gap(control_data):
    from faap.oracle import oracle_effect

    out = oracle_effect(control_data, "demo", split="test")
    print(f"AP gap on {out['images']} test images: clean {out['clean']['AP_gap']:.3f}, oracle "
          f"{out['oracle']['AP_gap']:.3f} (eps {out['eps']})")
    assert out["oracle"]["AP_male"] == out["clean"]["AP_male"]
    assert out["AP_gap_change"] < -0.05


@pytest.mark.parametrize("flags, message", [(["--eps", "-1"], "--eps must be > 0"),
                                            (["--max-images", "-2"], "--max-images must be >= 0")])
def test_oracle_bad_values_are_one_line(control_data, flags, message, capsys):
    from faap.cli import main

    assert main(["data", "oracle", control_data, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
