"""Corrupt images stop a run before training with one line naming the file (or are skipped)."""

import os
import shutil

import pytest
from PIL import Image

from conftest import tiny_values
from faap.cli import main
from faap.data.coco import load_split
from faap.data.images import decode_error
from faap.data.loader import GenderDetection
from faap.data.transforms import build_transforms
from faap.errors import DataError


def _truncate(path, keep=0.6):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.fixture
def bad_data(tiny_data, tmp_path):
    """The tiny benchmark with the first female val image truncated (a copy)."""
    root = str(tmp_path / "data")
    shutil.copytree(tiny_data, root)
    gs = load_split(root, "val")["female"]
    bad = gs.path(gs.images[0])
    _truncate(bad)
    return root, bad


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_found_by_both_checks(tmp_path, fmt):
    path = str(tmp_path / f"x.{fmt.lower()}")
    Image.effect_noise((96, 80), 60).convert("RGB").save(path, fmt)
    assert decode_error(path, full=True) is None and decode_error(path, full=False) is None
    _truncate(path)
    assert "truncated" in decode_error(path, full=True) or "EOF" in decode_error(path, full=True)
    assert decode_error(path, full=False) is not None


def test_inspect_lists_the_bad_image(bad_data, capsys):
    root, bad = bad_data
    assert main(["data", "inspect", root]) == 2
    out, err = capsys.readouterr()
    assert bad in out  # the JSON report lists it
    assert err.count("\n") == 1 and bad in err


def test_training_stops_before_it_starts(bad_data, tmp_path, capsys):
    root, bad = bad_data
    out_dir = str(tmp_path / "run")
    sets = [f"--set={k}={v}" for k, v in tiny_values(root).items() if k not in ("data", "detector", "device")]
    rc = main(["train", "--variant", "infonce", "--data", root, "--detector", "demo", "--device", "cpu",
               "--out", out_dir, "--quiet", *sets])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and bad in err and "--skip-bad-images" in err
    assert not os.path.exists(out_dir)


def test_skip_bad_images_leaves_them_out_and_counts_them(bad_data):
    from faap.trainer import Run
    from faap.variants import make_config

    root, bad = bad_data
    run = Run(make_config("infonce", tiny_values(root, skip_bad_images=True)), "unused", progress=False)
    assert bad not in [run.val_groups["female"].path(im) for im in run.val_groups["female"].images]
    assert run.resolved["skipped_bad_images"] == {"train": [], "val": [os.path.relpath(bad, root)], "test": []}
    assert len(run.val.image_ids["female"]) == len(load_split(root, "val")["female"].images) - 1


def test_dataset_names_a_file_that_fails_later(bad_data):
    root, bad = bad_data
    ds = GenderDetection(load_split(root, "val"), build_transforms(False, [128], 128, 128))
    with pytest.raises(DataError, match=bad):
        ds[0]
