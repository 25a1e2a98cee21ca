"""Helpers shared by the trainer, ``faap eval``, ``faap bench``, the sweep runner, analysis and
reports: the device, the detector of a dataset, the untrained modules of a seed, a saved run's
config, and a saved run opened for reading."""

from __future__ import annotations

import torch

from faap.errors import UserError
from faap.rundir import RunDir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name} requested but CUDA is not available")
    return torch.device(name)


def apply_precision(cfg, device) -> None:
    """TF32 matmuls and convolutions on CUDA as config ``tf32`` says (the originals ran with TF32 on; it is
    recorded with the run's config). No effect on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


def detector_for(spec: str, groups: dict, device="cpu", aux_loss: bool = True):
    """The frozen detector ``spec`` labelling with the categories of ``groups`` (one split's
    ``{group: GroupSplit}``); a dataset that lists no categories keeps the detector's own names."""
    from faap.detector import load_detector

    categories = {c["id"]: c["name"] for c in groups["male"].coco.get("categories", [])}
    return load_detector(spec, device, categories or None, aux_loss)


def initial_modules(cfg, hidden_dim: int, device="cpu"):
    """(generator, variant) before training, their weights drawn from ``cfg.seed``.

    The trainer builds its modules here, and whoever needs the untrained weights of a run rebuilds
    them here: the draws depend on the order G and the variant are built in, which lives only here.
    """
    from faap.generator import build_generator
    from faap.variants import get_variant

    torch.manual_seed(cfg.seed)
    generator = build_generator(cfg.channels_last, device, checkpointing=cfg.g_checkpointing)
    variant = get_variant(cfg.variant)(cfg, hidden_dim).to(device)
    return generator, variant


def run_config(run_dir: str):
    """The run's config object, rebuilt from its recorded ``config.yaml``; also the recorded mapping."""
    from faap.config import field_names
    from faap.variants import config_class, make_config

    recorded = RunDir(run_dir).read_config()
    cls = config_class(recorded["variant"])
    # A judged checkpoint's folder records None for what it did not do (seed, epochs).
    values = {k: v for k, v in recorded.items() if k in field_names(cls) and k != "variant" and v is not None}
    return make_config(recorded["variant"], values), recorded


def open_run(run_dir: str, epoch: int | None = None, split: str = "val", device="cpu", with_detector: bool = True):
    """(config, checkpoint state, the split's groups, the frozen detector) of a saved run; the detector is
    None with ``with_detector`` False (a caller that only runs G need not load it)."""
    from faap import checkpoint as ckpt
    from faap.data.coco import fingerprint, load_split

    cfg, recorded = run_config(run_dir)
    state = ckpt.load(run_dir, epoch, map_location=device)
    if fingerprint(cfg.data) != recorded.get("dataset_fingerprint"):
        raise UserError(f"dataset {cfg.data} changed since the run (fingerprint differs)")
    groups = load_split(cfg.data, split)
    apply_precision(cfg, device)  # evaluated as it was trained
    return cfg, state, groups, detector_for(cfg.detector, groups, device) if with_detector else None
