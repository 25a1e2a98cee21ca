"""A frozen DETR-family detector behind one small interface.

The rest of the suite sees logits, boxes, last-decoder-layer features (B x Q x D), the set
criterion against COCO targets, the Hungarian matching, matched-class probabilities and
COCO-format detections, whichever transformers model is inside.

One forward serves everything. The auxiliary predictions are computed as the original
code computes them, whatever the checkpoint's ``auxiliary_loss`` says: each decoder layer's
raw output (recorded by a forward hook) goes through the decoder's final layer norm and the
family's class/box heads. The criterion itself is the library's (``ImageLoss`` with the
family's matcher), applied per group on slices of that one forward, so the loss of each
group is normalised by its own box count as in the original per-group computation.

Trap (DETR): with ``auxiliary_loss`` on, transformers' DETR decoder feeds the layer-normed
output of each layer into the next one and normalises the last output twice; the original
(facebookresearch/detr ``TransformerDecoder``) feeds the raw outputs on and normalises only
the copies used for prediction. With it off, the library's forward is the original's, so
the wrapper switches it off for DETR. Conditional DETR keeps the library's forward as the
checkpoint's config has it: the bundled demo detector was trained with it on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from faap.errors import UserError


@dataclass
class DetectorOutput:
    logits: torch.Tensor
    """B x Q x C class logits (C includes no-object for softmax families)."""
    boxes: torch.Tensor
    """B x Q x 4 predicted boxes, (cx, cy, w, h) normalised to the unpadded image."""
    features: torch.Tensor
    """B x Q x D last decoder layer hidden states."""
    aux: list
    """Every decoder layer but the last: ``{"logits", "pred_boxes"}`` (empty with ``aux_loss`` off)."""

    @staticmethod
    def cat(parts: list["DetectorOutput"]) -> "DetectorOutput":
        """Rows of several outputs stacked in order."""
        aux = [{k: torch.cat([p.aux[i][k] for p in parts]) for k in parts[0].aux[i]} for i in range(len(parts[0].aux))]
        return DetectorOutput(torch.cat([p.logits for p in parts]), torch.cat([p.boxes for p in parts]),
                              torch.cat([p.features for p in parts]), aux)

    def select(self, index: torch.Tensor) -> "DetectorOutput":
        """The rows of a sub-batch (e.g. one group)."""
        return DetectorOutput(self.logits[index], self.boxes[index], self.features[index],
                              [{k: v[index] for k, v in a.items()} for a in self.aux])


class _RecordingMatcher(nn.Module):
    """Wraps the library matcher and keeps the first (last decoder layer) result of a call."""

    def __init__(self, matcher):
        super().__init__()
        self.matcher = matcher
        self.first = None

    def forward(self, outputs, targets):
        indices = self.matcher(outputs, targets)
        if self.first is None:
            self.first = indices
        return indices


def _detr_heads(model, hidden, decoder_out):
    return model.class_labels_classifier(hidden), model.bbox_predictor(hidden).sigmoid()


def _conditional_heads(model, hidden, decoder_out):
    from transformers.models.conditional_detr.modeling_conditional_detr import inverse_sigmoid

    # Boxes are offsets from the decoder's reference points, as in the library's forward.
    boxes = model.bbox_predictor(hidden)
    boxes[..., :2] += inverse_sigmoid(decoder_out.reference_points).transpose(0, 1)
    return model.class_labels_classifier(hidden), boxes.sigmoid()


HEADS = {"detr": _detr_heads, "conditional_detr": _conditional_heads}
"""Per family (``config.model_type``): class logits and boxes of a layer-normed decoder state."""
ORIGINAL_FORWARD_OFF = {"detr"}
"""Families whose library forward is the original's only with ``auxiliary_loss`` off (see top)."""


def weights_digest(model: nn.Module) -> str:
    """A digest of every parameter and buffer the model holds (names, dtypes, shapes and bytes).

    Trap: a path names a file, not its contents. Replacing the weights behind the same path (or two
    checkpoints with the same relative path) must give two ids, or a cached clean baseline and the
    mismatch checks of ``faap report --runs`` would treat two weight sets as one detector.
    """
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_finite(detector: "FrozenDetector") -> None:
    """One line naming the detector when its weights, or its outputs on a probe image, are not finite
    (NaN scores otherwise end deep in the COCO evaluator, after the run folder is written)."""
    bad = next((n for n, p in detector.model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise UserError(f"detector '{detector.spec}' has non-finite weights (first: {bad})")
    p = next(detector.model.parameters())
    with torch.no_grad():
        out = detector(torch.zeros(1, 3, 64, 64, device=p.device), torch.ones(1, 64, 64, dtype=torch.long,
                                                                               device=p.device))
    _check_outputs(detector.spec, out, "a probe image")


def _check_outputs(spec: str, out: "DetectorOutput", where: str) -> None:
    for what, t in (("scores", out.logits), ("boxes", out.boxes)):
        if not torch.isfinite(t).all():
            raise UserError(f"detector '{spec}' gives non-finite {what} on {where}")


class FrozenDetector(nn.Module):
    """Eval-mode, gradient-free-parameters wrapper; gradients still reach the input pixels."""

    def __init__(self, model, spec: str, category_names: dict[int, str] | None = None, aux_loss: bool = True):
        super().__init__()
        from transformers.loss.loss_deformable_detr import DeformableDetrHungarianMatcher, DeformableDetrImageLoss
        from transformers.loss.loss_for_object_detection import HungarianMatcher, ImageLoss

        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.weights = weights_digest(model)
        cfg = model.config
        if cfg.model_type not in HEADS:
            raise UserError(f"detector family '{cfg.model_type}' is not supported (DETR and Conditional DETR are)")
        if cfg.model_type in ORIGINAL_FORWARD_OFF:
            cfg.auxiliary_loss = False  # the decoder shares this config object: its forward becomes the original
        self.aux_loss = aux_loss
        self._recorded = None  # {"layers", "decoder"} only during this wrapper's forward
        for layer in model.model.decoder.layers:
            layer.register_forward_hook(self._record_layer)
        model.model.decoder.register_forward_hook(self._record_decoder)
        self.focal = hasattr(cfg, "focal_alpha")  # Conditional DETR: sigmoid focal loss
        self.num_labels = cfg.num_labels
        costs = dict(class_cost=cfg.class_cost, bbox_cost=cfg.bbox_cost, giou_cost=cfg.giou_cost)
        if self.focal:
            self.matcher = _RecordingMatcher(DeformableDetrHungarianMatcher(**costs))
            self.criterion = DeformableDetrImageLoss(self.matcher, cfg.num_labels, cfg.focal_alpha, ["labels", "boxes"])
        else:
            self.matcher = _RecordingMatcher(HungarianMatcher(**costs))
            self.criterion = ImageLoss(self.matcher, cfg.num_labels, cfg.eos_coefficient, ["labels", "boxes"])
        # As the library's ForObjectDetectionLoss: CE 1, L1 bbox_loss_coefficient, GIoU giou_loss_coefficient.
        self.weight_dict = {"loss_ce": 1.0, "loss_bbox": float(cfg.bbox_loss_coefficient),
                            "loss_giou": float(cfg.giou_loss_coefficient)}
        self.set_categories(category_names or {1: "person"})

    # ---- label bookkeeping -------------------------------------------------------------
    def set_categories(self, category_names: dict[int, str]) -> None:
        """Map dataset category ids to model class indices, by name (fallback: the same id)."""
        id2label = {int(k): str(v).lower() for k, v in (self.model.config.id2label or {}).items()}
        by_name = {name: idx for idx, name in id2label.items()}
        mapping = {}
        for cat_id, name in category_names.items():
            if str(name).lower() in by_name:
                mapping[int(cat_id)] = by_name[str(name).lower()]
            elif int(cat_id) < self.num_labels:
                mapping[int(cat_id)] = int(cat_id)
        self.category_to_label = mapping
        self.label_to_category = {v: k for k, v in mapping.items()}

    @property
    def detector_id(self) -> str:
        cfg = self.model.config
        # The original-decoder forward changed DETR outputs: a new id keeps old cached baselines out.
        forward = "|decoder=original" if cfg.model_type in ORIGINAL_FORWARD_OFF else ""
        return f"{self.spec}|{cfg.model_type}|q{cfg.num_queries}|d{cfg.d_model}{forward}|w{self.weights}"

    @property
    def hidden_dim(self) -> int:
        return int(self.model.config.d_model)

    def train(self, mode: bool = True):
        # The detector stays in eval mode whatever its parent does (dropout off, frozen BN).
        return super().train(False)

    # ---- forward ----------------------------------------------------------------------
    def _record_layer(self, module, args, output):
        if self._recorded is not None:
            self._recorded["layers"].append(output[0] if isinstance(output, tuple) else output)

    def _record_decoder(self, module, args, output):
        if self._recorded is not None:
            self._recorded["decoder"] = output

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> DetectorOutput:
        self._recorded = {"layers": [], "decoder": None}
        try:
            out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
            layers, decoder_out = self._recorded["layers"], self._recorded["decoder"]
        finally:
            self._recorded = None  # hold no graph between calls
        aux = self._aux_predictions(layers[:-1], decoder_out) if self.aux_loss else []
        return DetectorOutput(out.logits, out.pred_boxes, out.last_hidden_state, aux)

    def _aux_predictions(self, layers: list, decoder_out) -> list:
        """Final layer norm + heads on each raw layer output (the original's ``hs[:-1]`` predictions)."""
        heads, norm = HEADS[self.model.config.model_type], self.model.model.decoder.layernorm
        aux = []
        for raw in layers:
            logits, boxes = heads(self.model, norm(raw), decoder_out)
            aux.append({"logits": logits, "pred_boxes": boxes})
        return aux

    def class_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities over the real classes: softmax without no-object, or sigmoid."""
        return logits.sigmoid() if self.focal else logits.softmax(-1)[..., :-1]

    def objectness(self, out: DetectorOutput) -> torch.Tensor:
        """B x Q: the highest real-class probability of each query."""
        return self.class_probs(out.logits).max(-1).values

    # ---- criterion --------------------------------------------------------------------
    def set_loss(self, out: DetectorOutput, targets: list[dict]):
        """Weighted set loss (last + auxiliary layers), its terms, and the last layer's matching."""
        labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in targets]
        outputs = {"logits": out.logits, "pred_boxes": out.boxes}
        if out.aux:
            outputs["auxiliary_outputs"] = out.aux
        self.matcher.first = None
        terms = self.criterion(outputs, labels)
        loss = sum(self.weight_dict[k.rsplit("_", 1)[0] if k[-1].isdigit() else k] * v for k, v in terms.items())
        return loss, terms, self.matcher.first

    def matched_scores(self, out: DetectorOutput, targets: list[dict], indices) -> torch.Tensor:
        """Probability of the ground-truth class at each matched query (all images, concatenated)."""
        probs = self.class_probs(out.logits)
        scores = [probs[b, q, t["class_labels"][j]] for b, ((q, j), t) in enumerate(zip(indices, targets))]
        return torch.cat(scores) if scores else probs.new_zeros(0)

    # ---- detections -------------------------------------------------------------------
    @torch.no_grad()
    def detections(self, out: DetectorOutput, targets: list[dict], max_dets: int = 100) -> list[dict]:
        """COCO result dicts in original image pixels (categories the dataset knows only)."""
        _check_outputs(self.spec, out, f"image {targets[0]['image_id'] if targets else '?'}'s batch")
        probs = self.class_probs(out.logits.float())
        B, Q, C = probs.shape
        if self.focal:  # top-k over queries x classes, as the library's post-processing
            k = min(max_dets, Q * C)
            scores, flat = probs.reshape(B, -1).topk(k, dim=1)
            labels, qidx = flat % C, flat // C
        else:
            scores, labels = probs.max(-1)
            qidx = torch.arange(Q).expand(B, Q)
        results = []
        for b, t in enumerate(targets):
            h, w = t["orig_size"]
            boxes = out.boxes[b, qidx[b]].float()
            x0 = (boxes[:, 0] - boxes[:, 2] / 2) * w
            y0 = (boxes[:, 1] - boxes[:, 3] / 2) * h
            bw, bh = boxes[:, 2] * w, boxes[:, 3] * h
            for s, lab, xx, yy, ww, hh in zip(scores[b].tolist(), labels[b].tolist(), x0.tolist(), y0.tolist(),
                                              bw.tolist(), bh.tolist()):
                cat = self.label_to_category.get(lab)
                if cat is not None:
                    results.append({"image_id": t["image_id"], "category_id": cat, "bbox": [xx, yy, ww, hh],
                                    "score": s})
        return results
