"""``faap eval --run``: image dumps (``--dump-images``) and exploratory per-epoch records (``--epochs``)
of a tiny trained run."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_values
from faap.cli import main
from faap.data.coco import load_split
from faap.data.transforms import IMAGENET_STD
from faap.rundir import RunDir
from faap.trainer import Run
from faap.variants import make_config


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A finished 2-epoch run whose two checkpoints are both kept."""
    out = str(tmp_path_factory.mktemp("dump") / "run")
    Run(make_config("infonce", tiny_values(tiny_data)), out, progress=False).fit()
    return out


def _tree(path):
    """Every file under ``path`` with its bytes."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                files[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return files


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def test_dump_writes_what_it_lists(trained, tiny_data, capsys):
    assert main(["eval", "--run", trained, "--dump-images", "2", "--device", "cpu"]) == 0
    run = RunDir(trained)
    folder = run.dump_dir("val", run.selected_epoch())
    assert folder in capsys.readouterr().out
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    with open(os.path.join(folder, "index.csv")) as f:
        table = list(csv.DictReader(f))
    rows, eps = index["images"], index["eps"]
    assert index["epoch"] == run.selected_epoch() and eps == run.read_summary()["eps"]
    # Exactly the files listed, and the listed images are the first two of each group of val.
    listed = {row[kind] for row in rows for kind in ("clean", "perturbed", "perturbation")}
    assert set(os.listdir(folder)) == listed | {"index.json", "index.csv"} and len(listed) == 3 * len(rows)
    val = load_split(tiny_data, "val")
    for group in ("male", "female"):
        assert [(r["image_id"], r["source_file"]) for r in rows if r["group"] == group] == \
            [(im["id"], im["file_name"]) for im in val[group].images[:2]]
    assert [{k: str(v) for k, v in r.items()} for r in rows] == table
    std = np.array(IMAGENET_STD)
    for row in rows:
        clean, pert, amp = (_png(os.path.join(folder, row[k])) for k in ("clean", "perturbed", "perturbation"))
        assert clean.shape == pert.shape == amp.shape == (row["height"], row["width"], 3) == (128, 128, 3)
        # Denormalised properly: at the evaluated size (128 px here) the clean PNG is the source image.
        source = _png(val[row["group"]].path({"file_name": row["source_file"]}))
        assert np.abs(clean - source).max() <= 1
        # The perturbation respects eps, and its amplified picture is the change between the two PNGs.
        assert 0 < row["linf"] <= eps * (1 + 1e-6) and row["l2"] >= row["linf"]
        delta = (amp / 255 * 2 - 1) * eps  # back from [0, 255] to [-eps, eps], normalised units
        assert np.abs(delta).max() <= row["linf"] + eps / 127
        assert np.abs(pert - clean).max() <= eps * std.max() * 255 + 1
        assert np.abs((pert - clean) - delta * std * 255).max() <= 2.5


@pytest.mark.parametrize("case", ["no_run", "zero", "split"])
def test_dump_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, case):
    run, args = trained, ["--dump-images", "2"]
    if case == "no_run":
        run = str(tmp_path / "nope")
    elif case == "zero":
        args = ["--dump-images", "0"]
    else:
        args += ["--split", "tset"]
    before, here = _tree(trained), sorted(os.listdir(tmp_path))
    assert main(["eval", "--run", run, *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("faap: error: "), err
    assert _tree(trained) == before and sorted(os.listdir(tmp_path)) == here
    if case == "split":
        assert "did you mean 'test'" in err


def test_epochs_all_writes_marked_records_and_leaves_the_run_alone(trained, capsys):
    run = RunDir(trained)
    own = {k: v for k, v in _tree(trained).items() if not k.startswith("dumps")}
    assert main(["eval", "--run", trained, "--split", "test", "--epochs", "all", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("(exploratory)") == 2 and "selection on test" in out
    after = _tree(trained)
    assert {k: v for k, v in after.items() if k in own} == own  # summary.json byte for byte, and the rest
    records = run.read_exploratory("test")
    assert [r["epoch"] for r in records] == [0, 1]
    assert {os.path.relpath(run.exploratory_path("test", e), trained) for e in (0, 1)} == set(after) - set(own) - {
        k for k in after if k.startswith("dumps")}
    summary = run.read_summary()
    for r in records:
        assert r["exploratory"] is True and "selection on test" in r["note"] and r["split"] == "test"
        assert r["selected_epoch"] == summary["selected_epoch"]
    # The selected epoch's record is the run's own test evaluation, recomputed.
    chosen = records[summary["selected_epoch"]]
    assert chosen["gaps"]["AP"]["perturbed"] == summary["test"]["AP_gap"]
    assert chosen["gaps"]["AP"]["baseline"] == summary["baseline"]["test"]["AP_gap"]


@pytest.mark.parametrize("case", ["7", "x,1", "", "with_epoch", "generator"])
def test_epochs_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, case):
    which, args = ["--run", trained], ["--epochs", case]
    if case == "with_epoch":
        args = ["--epochs", "0", "--epoch", "1"]
    elif case == "generator":
        which = ["--generator", run_checkpoint(trained), "--data", "x", "--detector", "demo", "--out", str(tmp_path)]
        args = ["--epochs", "all"]
    before = _tree(trained)
    assert main(["eval", *which, *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("faap: error: "), err
    assert _tree(trained) == before and os.listdir(tmp_path) == []
    if case == "7":
        assert "saved: 0, 1" in err


def run_checkpoint(run_dir):
    return RunDir(run_dir).checkpoint_path(0)
