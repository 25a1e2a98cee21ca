"""Load an original facebookresearch/detr checkpoint (``detr-r50-e632da11.pth`` format).

The state dict is renamed into transformers' ``DetrForObjectDetection`` (timm ResNet
backbone, whose parameter names are torchvision's) and the config is read off the tensor
shapes: queries, d_model, layer counts, FFN size, classes, ResNet-50 vs -101 (blocks in
layer3). DC5 cannot be seen in the weights: it comes from the checkpoint's saved ``args``
(``args.dilation``) or a ``dc5`` in the file name.
"""

from __future__ import annotations

import argparse
import os
import re

import torch

from faap.errors import UserError

COCO_NAMES = (
    "N/A person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant N/A stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe N/A backpack umbrella N/A N/A "
    "handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle N/A wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair couch potted_plant bed N/A dining_table N/A N/A toilet N/A tv laptop mouse "
    "remote keyboard cell_phone microwave oven toaster sink refrigerator N/A book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
).split()
"""COCO category names by id (0..90; 'N/A' for unused ids), as DETR's class indices."""

_LAYER_RENAMES = [
    ("self_attn.out_proj", "self_attn.o_proj"),
    ("multihead_attn.out_proj", "encoder_attn.o_proj"),
    ("linear1", "mlp.fc1"),
    ("linear2", "mlp.fc2"),
]
_ENC_NORMS = {"norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"}
_DEC_NORMS = {"norm1": "self_attn_layer_norm", "norm2": "encoder_attn_layer_norm", "norm3": "final_layer_norm"}


def convert_state_dict(sd: dict) -> dict:
    """Original DETR names -> transformers DetrForObjectDetection names (q/k/v split)."""
    out = {}
    for key, value in sd.items():
        if key.startswith("backbone.0.body."):
            out["model.backbone.model." + key[len("backbone.0.body."):]] = value
            continue
        m = re.match(r"transformer\.(encoder|decoder)\.layers\.(\d+)\.(.*)", key)
        if m:
            part, idx, rest = m.groups()
            prefix = f"model.{part}.layers.{idx}."
            attn = {"self_attn": "self_attn", "multihead_attn": "encoder_attn"}
            am = re.match(r"(self_attn|multihead_attn)\.in_proj_(weight|bias)", rest)
            if am:
                q, k, v = value.chunk(3, dim=0)
                for name, t in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                    out[f"{prefix}{attn[am.group(1)]}.{name}.{am.group(2)}"] = t
                continue
            for old, new in _LAYER_RENAMES:
                rest = rest.replace(old, new)
            norms = _ENC_NORMS if part == "encoder" else _DEC_NORMS
            head, _, tail = rest.partition(".")
            out[prefix + norms.get(head, head) + ("." + tail if tail else "")] = value
            continue
        simple = {"input_proj.": "model.input_projection.", "query_embed.": "model.query_position_embeddings.",
                  "transformer.decoder.norm.": "model.decoder.layernorm.", "class_embed.": "class_labels_classifier.",
                  "bbox_embed.": "bbox_predictor."}
        for old, new in simple.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise UserError(f"unexpected key in DETR checkpoint: {key}")
    return out


def config_from_state_dict(sd: dict, dilation: bool):
    from transformers import DetrConfig

    def count(pattern):
        return len({m.group(1) for k in sd for m in [re.match(pattern, k)] if m})

    layer3 = count(r"backbone\.0\.body\.layer3\.(\d+)\.")
    backbone = {6: "resnet50", 23: "resnet101"}.get(layer3)
    if backbone is None:
        raise UserError(f"unrecognised DETR backbone: {layer3} blocks in layer3 (ResNet-50 has 6, ResNet-101 23)")
    num_classes = sd["class_embed.weight"].shape[0] - 1
    names = COCO_NAMES if num_classes == len(COCO_NAMES) else [f"class_{i}" for i in range(num_classes)]
    return DetrConfig(
        backbone=backbone, use_timm_backbone=True, dilation=dilation,
        num_queries=sd["query_embed.weight"].shape[0], d_model=sd["query_embed.weight"].shape[1],
        encoder_layers=count(r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=count(r"transformer\.decoder\.layers\.(\d+)\."),
        encoder_ffn_dim=sd["transformer.encoder.layers.0.linear1.weight"].shape[0],
        decoder_ffn_dim=sd["transformer.decoder.layers.0.linear1.weight"].shape[0],
        num_labels=num_classes, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})


def load_official(path: str):
    """A ``DetrForObjectDetection`` with the checkpoint's weights (strict)."""
    from transformers import DetrForObjectDetection

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read DETR checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    sd = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or "class_embed.weight" not in sd:
        raise UserError(f"{path} is not a facebookresearch DETR checkpoint (no model.class_embed.weight)")
    args = ckpt.get("args")
    dilation = bool(getattr(args, "dilation", False)) or "dc5" in os.path.basename(path).lower()
    model = DetrForObjectDetection(config_from_state_dict(sd, dilation))
    missing, unexpected = model.load_state_dict(convert_state_dict(sd), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise UserError(f"DETR checkpoint {path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def random_original_state_dict(d: int = 256, ffn: int = 2048, enc: int = 6, dec: int = 6, queries: int = 100,
                               classes: int = 91, heads: int = 8, seed: int = 0) -> dict:
    """A facebookresearch/detr state dict with random weights, built from torchvision and torch.nn
    modules (nothing downloaded); the defaults are DETR-R50's sizes. For tests and benchmarks."""
    import torchvision
    from torch import nn

    torch.manual_seed(seed)
    sd = {f"backbone.0.body.{k}": v for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
          if not k.startswith("fc.")}
    for part, make, n in (("encoder", nn.TransformerEncoderLayer, enc), ("decoder", nn.TransformerDecoderLayer, dec)):
        for i in range(n):
            sd.update({f"transformer.{part}.layers.{i}.{k}": v for k, v in make(d, heads, ffn).state_dict().items()})
    sd.update({f"transformer.decoder.norm.{k}": v for k, v in nn.LayerNorm(d).state_dict().items()})
    sd.update({f"input_proj.{k}": v for k, v in nn.Conv2d(2048, d, 1).state_dict().items()})
    sd["query_embed.weight"] = torch.randn(queries, d)
    sd.update({f"class_embed.{k}": v for k, v in nn.Linear(d, classes + 1).state_dict().items()})
    for j, (i, o) in enumerate([(d, d), (d, d), (d, 4)]):
        sd.update({f"bbox_embed.layers.{j}.{k}": v for k, v in nn.Linear(i, o).state_dict().items()})
    return sd
