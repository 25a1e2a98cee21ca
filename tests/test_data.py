"""The synthetic benchmark, the readers' errors, the sampler and the fingerprint."""

import hashlib
import json
import os
import random
import shutil

import pytest
import torch

from faap.data.coco import fingerprint, load_split
from faap.data.images import inspect
from faap.data.loader import BalancedGroupSampler, GenderDetection, collate
from faap.data.synth import SynthConfig, generate, render
from faap.data.transforms import build_transforms
from faap.errors import DataError


def _md5_tree(root):
    h = hashlib.md5()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_synth_is_deterministic_and_in_layout(tmp_path):
    cfg = SynthConfig(n_train=10, n_val=3, n_test=3)
    generate(str(tmp_path / "a"), cfg, workers=1, progress=False)
    generate(str(tmp_path / "b"), cfg, workers=2, progress=False)
    assert _md5_tree(tmp_path / "a") == _md5_tree(tmp_path / "b")
    for split in ("train", "val", "test"):
        groups = load_split(str(tmp_path / "a"), split)
        assert set(groups) == {"male", "female"}
    train = load_split(str(tmp_path / "a"), "train")
    assert len(train["male"].images) == 8 and len(train["female"].images) == 2  # male_share 0.8


def test_synth_group_cue_and_difficulty():
    cfg = SynthConfig()
    male = [render(cfg, "val", "male", i)[0].astype(float) for i in range(20)]
    female = [render(cfg, "val", "female", i)[0].astype(float) for i in range(20)]
    # Visible cue: male images are blue-tinted, female red-tinted.
    assert all(m[..., 2].mean() > m[..., 0].mean() for m in male)
    assert all(f[..., 0].mean() > f[..., 2].mean() for f in female)
    assert cfg.female.contrast[1] < cfg.male.contrast[0]  # harder group has lower contrast


def test_synth_refuses_non_empty_output(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        generate(str(tmp_path / "x"), SynthConfig(n_train=2, n_val=1, n_test=1), workers=1, progress=False)


@pytest.fixture
def copy(tiny_data, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_data, dst)
    return dst


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_missing_folder_and_json(copy, tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_split(str(tmp_path / "nope"), "val")
    os.remove(copy / "women_split" / "gender_women_val.json")
    with pytest.raises(DataError, match="annotation file not found: .*gender_women_val.json"):
        load_split(str(copy), "val")


def test_missing_images_counted(copy):
    files = sorted(os.listdir(copy / "men_split" / "val"))[:2]
    for f in files:
        os.remove(copy / "men_split" / "val" / f)
    with pytest.raises(DataError, match=r"2 listed images missing .*first: " + files[0]):
        load_split(str(copy), "val")


def test_box_outside_image(copy):
    ann = copy / "men_split" / "gender_men_val.json"
    _edit(ann, lambda d: d["annotations"][0].update(bbox=[100, 100, 60, 10]))
    with pytest.raises(DataError, match="lies outside its image"):
        load_split(str(copy), "val")


def test_empty_split_and_bad_json(copy):
    ann = copy / "women_split" / "gender_women_test.json"
    _edit(ann, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(DataError, match="empty split"):
        load_split(str(copy), "test")
    ann.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(str(copy), "test")


def test_single_json_layout_and_unknown_gender(tiny_data, tmp_path):
    root = tmp_path / "single"
    (root / "val").mkdir(parents=True)
    images, anns = [], []
    for folder, group in (("women", "female"), ("men", "male")):
        d = json.loads(open(os.path.join(tiny_data, f"{folder}_split", f"gender_{folder}_val.json")).read())
        for im in d["images"]:
            shutil.copy(os.path.join(tiny_data, f"{folder}_split", "val", im["file_name"]), root / "val")
        images += d["images"]
        anns += d["annotations"]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": d["categories"]}))
    groups = load_split(str(root), "val")
    assert len(groups["female"].images) == 12 and len(groups["male"].images) == 12
    images[0]["gender"] = "woman"
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    with pytest.raises(DataError, match="gender 'woman'"):
        load_split(str(root), "val")


def test_fingerprint_changes_with_annotations(copy):
    before = fingerprint(str(copy))
    assert before == fingerprint(str(copy))
    _edit(copy / "men_split" / "gender_men_val.json", lambda d: d["annotations"][0].update(area=1.0))
    assert fingerprint(str(copy)) != before
    report = inspect(str(copy))
    assert report["splits"]["val"]["male"]["images"] == 12 and not report["problems"]


def test_balanced_sampler():
    index = {"female": list(range(0, 10)), "male": list(range(10, 50))}
    s = BalancedGroupSampler(index, seed=1)
    s.set_epoch(0)
    draw = list(s)
    assert len(draw) == 80  # 2 x max(n_f, n_m)
    female_share = sum(i < 10 for i in draw) / len(draw)
    assert 0.35 < female_share < 0.65
    assert draw == list(s)  # same epoch, same draw
    s.set_epoch(1)
    assert draw != list(s)
    capped = BalancedGroupSampler(index, seed=1, cap=5)
    assert len(capped) == 10 and len({i for i in capped if i >= 10}) <= 5
    ranks = [list(BalancedGroupSampler(index, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(draw)


def test_dataset_targets_and_collate(tiny_data):
    groups = load_split(tiny_data, "val")
    ds = GenderDetection(groups, build_transforms(False, [128], 128, 128), {1: 0})
    img, t = ds[0]
    assert img.shape == (3, 128, 128) and t["group"] == 1  # female first
    assert t["boxes"].min() >= 0 and t["boxes"].max() <= 1 and (t["class_labels"] == 0).all()
    raw = groups["female"].anns_by_image[groups["female"].images[0]["id"]][0]["bbox"]
    assert t["boxes"][0, 2].item() == pytest.approx(raw[2] / 128, abs=1e-5)
    batch = collate([ds[0], ds[len(ds) - 1]])
    assert batch["pixel_values"].shape == (2, 3, 128, 128) and batch["groups"].tolist() == [1, 0]


def test_train_transforms_multiscale_and_crop():
    from PIL import Image

    tf = build_transforms(True, [64, 96], 200, 128, random_crop=True, crop_scales=(80,), crop_size=(40, 60))
    image = Image.new("RGB", (160, 120))
    torch.manual_seed(0)
    random.seed(0)  # the crop draws from Python's RNG (seeded per DataLoader worker in training)
    for _ in range(10):
        img, t = tf(image, {"boxes": torch.tensor([[10.0, 10.0, 150.0, 110.0]]), "labels": torch.tensor([0])})
        # torchvision's RandomShortestSize truncates (40 x 64/40 can give 63): one pixel of slack
        assert any(abs(min(img.shape[-2:]) - s) <= 1 for s in (64, 96))
        b = t["boxes"]
        assert (b[:, 2] <= img.shape[-1] + 1e-4).all() and (b[:, 3] <= img.shape[-2] + 1e-4).all()
