"""The detector path against references: the original DETR decoder's formulas, the library's
criterion over every decoder layer, and the bundled demo detector's outputs as trained."""

import os

import pytest
import torch

from faap.detector import DEMO_DIR, load_detector

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
