"""The frozen-detector wrapper on tiny random configs, the demo detector and the DETR .pth mapping."""

import argparse
import copy

import pytest
import torch
from torch import nn

from faap.detector import FrozenDetector, load_detector
from faap.errors import UserError


def tiny_model(family: str, **over):
    from transformers import ConditionalDetrConfig, ConditionalDetrForObjectDetection, DetrConfig, \
        DetrForObjectDetection, ResNetConfig

    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                            out_features=["stage2"])
    common = dict(backbone_config=backbone, num_labels=2, id2label={0: "person", 1: "car"},
                  label2id={"person": 0, "car": 1}, num_queries=6, d_model=16, encoder_layers=1,
                  decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                  decoder_ffn_dim=32, auxiliary_loss=True)
    common.update(over)
    torch.manual_seed(0)
    if family == "detr":
        return DetrForObjectDetection(DetrConfig(**common))
    return ConditionalDetrForObjectDetection(ConditionalDetrConfig(**common))


def _batch():
    torch.manual_seed(1)
    x = torch.randn(3, 3, 64, 64)
    mask = torch.ones(3, 64, 64, dtype=torch.long)
    mask[2, :, 48:] = 0  # padded image
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]]), "class_labels": torch.tensor([0]), "image_id": 1,
                "orig_size": (100, 200)},
               {"boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.5]]),
                "class_labels": torch.tensor([0, 1]), "image_id": 2, "orig_size": (64, 64)},
               {"boxes": torch.tensor([[0.4, 0.5, 0.2, 0.6]]), "class_labels": torch.tensor([0]), "image_id": 3,
                "orig_size": (64, 48)}]
    return x, mask, targets


@pytest.mark.parametrize("family", ["detr", "conditional"])
def test_wrapper_outputs_and_frozen(family):
    model = tiny_model(family)
    det = FrozenDetector(model, "tiny", {1: "person", 3: "car"})
    assert det.category_to_label == {1: 0, 3: 1}
    x, mask, targets = _batch()
    x.requires_grad_(True)
    before = {k: v.clone() for k, v in det.state_dict().items()}
    out = det(x, mask)
    extra = 1 if family == "detr" else 0  # no-object class for softmax families
    assert out.logits.shape == (3, 6, 2 + extra) and out.boxes.shape == (3, 6, 4)
    assert out.features.shape == (3, 6, 16) and len(out.aux) == 1
    loss, terms, indices = det.set_loss(out, targets)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the pixels
    assert all(not p.requires_grad and p.grad is None for p in det.parameters())
    det.train()
    assert not det.model.training  # stays in eval mode
    assert all(torch.equal(before[k], v) for k, v in det.state_dict().items())
    assert [len(i) for i, _ in indices] == [1, 2, 1]
    scores = det.matched_scores(out, targets, indices)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()


def test_conditional_set_loss_equals_library_loss():
    """Conditional DETR keeps the library's forward; DETR's is checked in test_detector_fidelity."""
    model = tiny_model("conditional").eval()
    reference = copy.deepcopy(model)
    det = FrozenDetector(model, "tiny")
    x, mask, targets = _batch()
    labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in targets]
    with torch.no_grad():
        expected = reference(pixel_values=x, pixel_mask=mask, labels=labels).loss
        got, _, _ = det.set_loss(det(x, mask), targets)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_matching_is_the_library_matcher():
    from transformers.loss.loss_for_object_detection import HungarianMatcher

    det = FrozenDetector(tiny_model("detr"), "tiny")
    x, mask, targets = _batch()
    with torch.no_grad():
        out = det(x, mask)
        _, _, indices = det.set_loss(out, targets)
    cfg = det.model.config
    ref = HungarianMatcher(cfg.class_cost, cfg.bbox_cost, cfg.giou_cost)({"logits": out.logits, "pred_boxes": out.boxes},
                                                                         targets)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(indices, ref))


def test_detections_in_original_pixels():
    det = FrozenDetector(tiny_model("conditional"), "tiny", {1: "person"})
    x, mask, targets = _batch()
    with torch.no_grad():
        out = det(x, mask)
    dets = det.detections(out, targets)
    assert {d["category_id"] for d in dets} == {1}  # 'car' is unknown to the dataset: dropped
    first = [d for d in dets if d["image_id"] == 1]
    assert all(-1 <= d["bbox"][0] <= 200 and d["bbox"][2] <= 200 * 1.01 for d in first)


def test_demo_detector_loads_and_is_conditional_detr():
    det = load_detector("demo")
    assert det.focal and det.model.config.num_queries == 10 and det.hidden_dim == 128
    assert det.category_to_label == {1: 0}
    x = torch.randn(1, 3, 64, 64)
    mask = torch.ones(1, 64, 64, dtype=torch.long)
    with torch.no_grad():
        assert len(det(x, mask).aux) == 1 and load_detector("demo", aux_loss=False)(x, mask).aux == []


def test_bad_specs_fail_with_one_line(tmp_path):
    with pytest.raises(UserError, match="detector checkpoint not found"):
        load_detector(str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="detector not found"):
        load_detector(str(tmp_path / "no-such-dir") + "/")
    with pytest.raises(UserError, match="cannot load detector 'facebook/detr-resnet-50'"):
        load_detector("facebook/detr-resnet-50")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read DETR checkpoint"):
        load_detector(str(bad))


def _original_detr_state_dict():
    """A tiny facebookresearch/detr state dict (ResNet-50 body, small transformer), random weights."""
    from faap.detector.official import random_original_state_dict

    return random_original_state_dict(d=32, ffn=64, enc=1, dec=2, queries=5, heads=4)


def test_official_checkpoint_mapping(tmp_path):
    sd = _original_detr_state_dict()
    path = tmp_path / "detr-r50-tiny.pth"
    torch.save({"model": sd, "args": argparse.Namespace(dilation=False, backbone="resnet50")}, path)
    det = load_detector(str(path))
    cfg = det.model.config
    assert (cfg.num_queries, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.num_labels) == (5, 32, 1, 2, 91)
    assert det.category_to_label[1] == 1  # COCO person is class index 1
    new = det.model.state_dict()
    w = sd["transformer.decoder.layers.1.multihead_attn.in_proj_weight"]
    assert torch.equal(new["model.decoder.layers.1.encoder_attn.q_proj.weight"], w[:32])
    assert torch.equal(new["model.decoder.layers.1.encoder_attn.v_proj.weight"], w[64:])
    assert torch.equal(new["model.encoder.layers.0.final_layer_norm.weight"], sd["transformer.encoder.layers.0.norm2.weight"])
    assert torch.equal(new["model.backbone.model.layer3.5.conv2.weight"], sd["backbone.0.body.layer3.5.conv2.weight"])
    assert torch.equal(new["bbox_predictor.layers.2.bias"], sd["bbox_embed.layers.2.bias"])
    with torch.no_grad():
        out = det(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.long))
    assert out.logits.shape == (1, 5, 92) and len(out.aux) == 1
    # DC5 comes from the saved args (it cannot be seen in the weights).
    torch.save({"model": sd, "args": argparse.Namespace(dilation=True)}, tmp_path / "x.pth")
    assert load_detector(str(tmp_path / "x.pth")).model.config.dilation is True


def test_train_demo_is_reproducible(tiny_data, tmp_path):
    """Same seed, same weights (a few steps of the real recipe, twice)."""
    from safetensors.torch import load_file

    from faap.detector.demo import train_demo

    for name in ("a", "b"):
        train_demo(tiny_data, str(tmp_path / name), steps=3, batch_size=4, seed=5, progress=False)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    det = load_detector(str(tmp_path / "a"))  # loads with no custom code, strict
    assert det.model.config.num_queries == 10
