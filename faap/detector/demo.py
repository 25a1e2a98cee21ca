"""The bundled demo detector: a small Conditional DETR trained from scratch on the synthetic benchmark.

``faap detector train-demo`` reproduces ``faap/assets/demo_detector`` from a seed. The
recipe (measured on 2 CPU cores, see README) needs three departures from the library
defaults, which assume a pretrained backbone:

1. every backbone parameter trains (the library freezes the stem and first stage);
2. backbone convolutions start from Kaiming init (the library's N(0, 0.02) stalls);
3. training uses ordinary BatchNorm in place of the frozen BatchNorm (an identity at init);
   the learned statistics are folded back into the frozen-BN buffers before saving, so
   the checkpoint is a standard transformers state dict that loads with no custom code.
"""

from __future__ import annotations

import json
import math
import os
import time

import torch
from torch import nn

DEMO_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "demo_detector")


def demo_config():
    from transformers import ConditionalDetrConfig, ResNetConfig

    backbone = ResNetConfig(num_channels=3, embedding_size=32, hidden_sizes=[32, 64, 128], depths=[1, 1, 1],
                            layer_type="basic", downsample_in_first_stage=False, out_features=["stage3"])
    return ConditionalDetrConfig(
        backbone_config=backbone, num_labels=1, id2label={0: "person"}, label2id={"person": 0},
        num_queries=10, d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, dropout=0.0, auxiliary_loss=True)


def _swap_frozen_bn(module: nn.Module) -> None:
    """Replace frozen BatchNorm layers by trainable ``nn.BatchNorm2d`` (recursively)."""
    for name, child in module.named_children():
        if type(child).__name__.endswith("FrozenBatchNorm2d"):
            setattr(module, name, nn.BatchNorm2d(child.weight.numel()))
        else:
            _swap_frozen_bn(child)


def _fold_bn(module: nn.Module, frozen_cls) -> None:
    """Put the learned BatchNorm statistics back into frozen-BN modules (recursively)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = frozen_cls(child.num_features)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).data.copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            _fold_bn(child, frozen_cls)


def build_trainable(seed: int):
    from transformers import ConditionalDetrForObjectDetection
    from transformers.models.conditional_detr.modeling_conditional_detr import ConditionalDetrFrozenBatchNorm2d

    torch.manual_seed(seed)
    model = ConditionalDetrForObjectDetection(demo_config())
    backbone = model.model.backbone
    _swap_frozen_bn(backbone)
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for p in model.parameters():
        p.requires_grad_(True)
    return model, ConditionalDetrFrozenBatchNorm2d


def lr_at(step: int, total: int, warmup: int = 100, floor: float = 0.02) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def train_demo(data: str, out: str, steps: int = 6000, batch_size: int = 16, lr: float = 2e-4,
               seed: int = 0, progress: bool = True) -> dict:
    """Train the demo detector on ``data``'s train split and save it to ``out``."""
    from tqdm import tqdm

    from faap.data.coco import fingerprint, load_split
    from faap.data.loader import GenderDetection, make_loader
    from faap.data.transforms import build_transforms

    torch.manual_seed(seed)
    groups = load_split(data, "train")
    size = groups["male"].images[0]["width"]
    ds = GenderDetection(groups, build_transforms(True, [size], size, size), {1: 0})
    loader = make_loader(ds, batch_size, shuffle=True, seed=seed)
    model, frozen_cls = build_trainable(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, steps))
    step, t0, losses = 0, time.time(), []
    bar = tqdm(total=steps, desc="train demo detector", disable=not progress, mininterval=2.0)
    while step < steps:
        for batch in loader:
            labels = [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in batch["targets"]]
            loss = model(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
            if step >= steps:
                break
    bar.close()
    model.eval()
    _fold_bn(model.model.backbone, frozen_cls)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    record = {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "weight_decay": 1e-4,
              "grad_clip": 0.1, "warmup": 100, "cosine_floor": 0.02, "data_fingerprint": fingerprint(data),
              "train_seconds": round(time.time() - t0, 1), "final_loss_mean50": sum(losses[-50:]) / 50,
              "torch": torch.__version__}
    with open(os.path.join(out, "training.json"), "w") as f:
        json.dump(record, f, indent=2)
    return record
