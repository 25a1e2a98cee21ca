"""A detector is known by its weights: new weights behind the same path give a new id and a new clean
baseline; non-finite weights or outputs stop with one line naming the detector, before anything is written."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from faap import cli
from faap.config import TrainConfig, build_config
from faap.data.coco import load_split
from faap.detector import DEMO_DIR, load_detector
from faap.errors import UserError
from faap.evaluate import Evaluator, clean_baseline, clean_detections_path
from tests.conftest import tiny_values


def _copy_demo(tmp_path) -> str:
    path = str(tmp_path / "detector")
    shutil.copytree(DEMO_DIR, path)
    return path


def _edit_weights(path: str, edit) -> None:
    """Rewrite the detector's weights in place (same folder, same file name)."""
    file = os.path.join(path, "model.safetensors")
    weights = load_file(file)
    name = sorted(k for k, v in weights.items() if k.endswith("class_labels_classifier.weight"))[0]
    weights[name] = edit(weights[name])
    save_file(weights, file, metadata={"format": "pt"})


def _clean(data: str, detector) -> tuple[dict, str]:
    cfg = build_config(TrainConfig, tiny_values(data))
    evaluator = Evaluator(load_split(data, "val"), detector, cfg, torch.device("cpu"), max_images=4)
    return clean_baseline(evaluator, "fp", "val"), clean_detections_path(evaluator, "fp", "val")


def test_new_weights_at_the_same_path_give_a_new_id_and_baseline(tmp_path, tiny_data):
    path = _copy_demo(tmp_path)
    first = load_detector(path)
    result_a, cache_a = _clean(tiny_data, first)
    assert load_detector(path).detector_id == first.detector_id  # same weights: same id, cache served
    _edit_weights(path, lambda w: w + 0.5)
    second = load_detector(path)
    assert second.detector_id != first.detector_id and second.spec == first.spec
    result_b, cache_b = _clean(tiny_data, second)
    assert cache_b != cache_a and os.path.isfile(cache_a) and os.path.isfile(cache_b)
    assert result_b != result_a  # computed afresh from the new weights, not the old entry


def test_two_checkpoints_with_one_relative_path_differ(tmp_path, monkeypatch):
    ids = []
    for name, edit in (("a", lambda w: w), ("b", lambda w: w * 1.1)):
        (tmp_path / name).mkdir()
        path = _copy_demo(tmp_path / name)
        _edit_weights(path, edit)
        monkeypatch.chdir(tmp_path / name)
        ids.append(load_detector("detector").detector_id)
    assert ids[0].startswith("detector|") and ids[0] != ids[1]


def test_non_finite_weights_end_in_one_line(tmp_path):
    path = _copy_demo(tmp_path)
    _edit_weights(path, lambda w: torch.full_like(w, float("nan")))
    with pytest.raises(UserError, match=r"detector '.*detector' has non-finite weights"):
        load_detector(path)


def test_non_finite_outputs_stop_train_before_anything_is_written(tmp_path, tiny_data, capsys):
    path = _copy_demo(tmp_path)
    # finite weights whose products overflow to inf - inf = NaN scores
    _edit_weights(path, lambda w: torch.where(torch.arange(w.numel()).reshape(w.shape) % 2 == 0, 3e38, -3e38))
    out = tmp_path / "run"
    code = cli.main(["train", "--variant", "adversarial", "--data", tiny_data, "--detector", path,
                     "--out", str(out), "--set", "epochs=1", "--set", "epoch_samples=4"])
    err = capsys.readouterr().err.strip().splitlines()  # progress bars, then the one line
    assert code == 2 and "gives non-finite scores on a probe image" in err[-1] and path in err[-1]
    assert sum("Traceback" in line for line in err) == 0
    assert not out.exists() or not any(out.iterdir())
