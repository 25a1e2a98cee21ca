"""The detector path against references: the original DETR decoder's formulas, the library's
criterion over every decoder layer, and the bundled demo detector's outputs as trained."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faap.detector import DEMO_DIR, FrozenDetector, load_detector
from test_detector import _batch, tiny_model

DEMO_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "demo_detector_outputs.pt")


# ---- the demo detector (Conditional DETR) keeps the outputs it was trained with ---------------
def _demo_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 128, 128, generator=g)
    mask = torch.ones(2, 128, 128, dtype=torch.long)
    mask[1, :, 96:] = 0
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]]), "class_labels": torch.tensor([0]), "image_id": 1,
                "orig_size": (128, 128)},
               {"boxes": torch.tensor([[0.3, 0.4, 0.2, 0.5], [0.7, 0.6, 0.3, 0.3]]),
                "class_labels": torch.tensor([0, 0]), "image_id": 2, "orig_size": (128, 96)}]
    return x, mask, targets


def test_demo_detector_outputs_are_pinned():
    """Values saved by the wrapper of commit bc43089 (before the original-DETR decoder fix)."""
    expected = torch.load(DEMO_FIXTURE, weights_only=True)
    det = load_detector("demo")
    x, mask, targets = _demo_input()
    with torch.no_grad():
        out = det(x, mask)
        loss = det.set_loss(out, targets)[0]
    dets = det.detections(out, targets)
    got = {"logits": out.logits, "boxes": out.boxes, "features": out.features,
           "aux_logits": torch.stack([a["logits"] for a in out.aux]),
           "aux_boxes": torch.stack([a["pred_boxes"] for a in out.aux]), "loss": loss,
           "det_scores": torch.tensor([d["score"] for d in dets]), "det_boxes": torch.tensor([d["bbox"] for d in dets])}
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5, msg=key)


def test_demo_detector_is_the_unmodified_library_forward():
    from transformers import ConditionalDetrForObjectDetection

    library = ConditionalDetrForObjectDetection.from_pretrained(DEMO_DIR).eval()
    det = load_detector("demo")
    x, mask, targets = _demo_input()
    labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in targets]
    with torch.no_grad():
        ref = library(pixel_values=x, pixel_mask=mask, labels=labels)
        out = det(x, mask)
        loss = det.set_loss(out, targets)[0]
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.boxes, ref.pred_boxes)
    assert torch.equal(out.features, ref.last_hidden_state)
    assert len(out.aux) == len(ref.auxiliary_outputs) == library.config.decoder_layers - 1
    for got, want in zip(out.aux, ref.auxiliary_outputs):
        torch.testing.assert_close(got["logits"], want["logits"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["pred_boxes"], want["pred_boxes"], rtol=1e-6, atol=1e-6)
    assert loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)


# ---- DETR: the original decoder (facebookresearch/detr models/transformer.py), same weights -----
def _mha(attn, heads: int) -> nn.MultiheadAttention:
    """The original's ``nn.MultiheadAttention`` holding a transformers attention's weights."""
    d = attn.q_proj.weight.shape[0]
    m = nn.MultiheadAttention(d, heads)
    with torch.no_grad():
        m.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        m.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        m.out_proj.weight.copy_(attn.o_proj.weight)
        m.out_proj.bias.copy_(attn.o_proj.bias)
    return m.eval()


def _original_layer(layer, heads, tgt, memory, pad, pos, query_pos):
    """``TransformerDecoderLayer.forward_post`` (eval: dropout off); sequence-first tensors."""
    sa, ca = _mha(layer.self_attn, heads), _mha(layer.encoder_attn, heads)
    q = k = tgt + query_pos
    tgt = layer.self_attn_layer_norm(tgt + sa(q, k, value=tgt)[0])
    tgt2 = ca(query=tgt + query_pos, key=memory + pos, value=memory, key_padding_mask=pad)[0]
    tgt = layer.encoder_attn_layer_norm(tgt + tgt2)
    tgt2 = layer.mlp.fc2(F.relu(layer.mlp.fc1(tgt)))
    return layer.final_layer_norm(tgt + tgt2)


def _original_decoder(model, inputs: dict) -> torch.Tensor:
    """``TransformerDecoder`` with return_intermediate: L x B x Q x D, ``norm`` on copies only."""
    dec, heads = model.model.decoder, model.config.decoder_attention_heads
    seq = lambda t: t.transpose(0, 1)  # noqa: E731  (batch-first -> the original's sequence-first)
    memory, pos = seq(inputs["encoder_hidden_states"]), seq(inputs["spatial_position_embeddings"])
    query_pos = seq(inputs["object_queries_position_embeddings"])
    pad = ~inputs["encoder_attention_mask"].bool()
    output, intermediate = torch.zeros_like(query_pos), []
    for layer in dec.layers:
        output = _original_layer(layer, heads, output, memory, pad, pos, query_pos)
        intermediate.append(dec.layernorm(output))
    intermediate[-1] = dec.layernorm(output)  # the original's pop/append: the last output, normed once
    return torch.stack(intermediate).transpose(1, 2)


def _original_heads(model, hs):
    """``class_embed(hs)``, ``bbox_embed(hs).sigmoid()`` (the original MLP: ReLU between layers)."""
    x, layers = hs, model.bbox_predictor.layers
    for i, lin in enumerate(layers):
        x = F.relu(lin(x)) if i < len(layers) - 1 else lin(x)
    return model.class_labels_classifier(hs), x.sigmoid()


def _decoder_inputs(model, x, mask) -> dict:
    """What the library's DETR model hands its decoder (encoder memory, position embeddings, mask)."""
    seen = {}
    hook = model.model.decoder.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        model.model(pixel_values=x, pixel_mask=mask)
    hook.remove()
    return seen


def _trained_like_detr(auxiliary_loss: bool, decoder_layers: int):
    """A tiny DETR whose layer norms are far from their initialisation (else the bug is invisible)."""
    model = tiny_model("detr", auxiliary_loss=auxiliary_loss, decoder_layers=decoder_layers).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))
    return model


@pytest.mark.parametrize("auxiliary_loss", [True, False])
@pytest.mark.parametrize("aux_loss", [True, False])
def test_detr_forward_is_the_original_decoder(auxiliary_loss, aux_loss):
    """Whatever the checkpoint's config says, the wrapper computes the original DETR's outputs."""
    model = _trained_like_detr(auxiliary_loss, decoder_layers=3)
    x, mask, _ = _batch()
    with torch.no_grad():
        logits, boxes = _original_heads(model, _original_decoder(model, _decoder_inputs(model, x, mask)))
        out = FrozenDetector(model, "tiny", aux_loss=aux_loss)(x, mask)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits, logits[-1], **tol)
    torch.testing.assert_close(out.boxes, boxes[-1], **tol)
    assert len(out.aux) == (2 if aux_loss else 0)
    for i, a in enumerate(out.aux):
        torch.testing.assert_close(a["logits"], logits[i], **tol)
        torch.testing.assert_close(a["pred_boxes"], boxes[i], **tol)


def _library_loss(model, logits, boxes, targets, all_layers: bool) -> torch.Tensor:
    """transformers' own DETR loss (matcher, ImageLoss, weight dict) on the given per-layer predictions."""
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

    config = copy.deepcopy(model.config)
    config.auxiliary_loss = all_layers
    labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in targets]
    return ForObjectDetectionLoss(logits[-1], labels, "cpu", boxes[-1], config, logits, boxes)[0]


def test_hub_config_set_loss_sums_every_decoder_layer():
    """auxiliary_loss false (as facebook/detr-resnet-50's config): the loss still has all 6 layers."""
    model = _trained_like_detr(auxiliary_loss=False, decoder_layers=6)
    x, mask, targets = _batch()
    with torch.no_grad():
        logits, boxes = _original_heads(model, _original_decoder(model, _decoder_inputs(model, x, mask)))
        expected_all = _library_loss(model, logits, boxes, targets, all_layers=True)
        expected_last = _library_loss(model, logits, boxes, targets, all_layers=False)
        det = FrozenDetector(model, "tiny")
        got_all = det.set_loss(det(x, mask), targets)[0]
        det.aux_loss = False
        got_last = det.set_loss(det(x, mask), targets)[0]
    assert got_all.item() == pytest.approx(expected_all.item(), rel=1e-5)
    assert got_last.item() == pytest.approx(expected_last.item(), rel=1e-5)
    assert expected_all > 2 * expected_last  # the five auxiliary layers really count


@pytest.mark.parametrize("family", ["detr", "conditional"])
def test_layer_heads_reproduce_the_library_last_layer(family):
    """With auxiliary_loss off the library's own output is final norm + heads on the last raw layer
    output: the per-layer heads that make the auxiliary predictions must give the same."""
    from faap.detector.wrapper import HEADS

    model = tiny_model(family, auxiliary_loss=False).eval()
    recorded = {}
    model.model.decoder.layers[-1].register_forward_hook(lambda m, a, o: recorded.update(raw=o))
    model.model.decoder.register_forward_hook(lambda m, a, o: recorded.update(decoder=o))
    det = FrozenDetector(model, "tiny")
    x, mask, _ = _batch()
    with torch.no_grad():
        out = det(x, mask)
        logits, boxes = HEADS[model.config.model_type](model, model.model.decoder.layernorm(recorded["raw"]),
                                                       recorded["decoder"])
    assert torch.equal(logits, out.logits) and torch.equal(boxes, out.boxes)
    assert len(out.aux) == model.config.decoder_layers - 1


def test_unsupported_family_fails_with_one_line():
    from types import SimpleNamespace

    from faap.errors import UserError

    class Foreign(nn.Module):
        config = SimpleNamespace(model_type="deformable_detr")

    with pytest.raises(UserError, match="detector family 'deformable_detr' is not supported"):
        FrozenDetector(Foreign(), "foreign")
