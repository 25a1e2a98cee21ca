"""Re-evaluate a saved checkpoint of a run folder (``faap eval``)."""

from __future__ import annotations

import json
import os

import torch

from faap import checkpoint as ckpt
from faap.config import field_names
from faap.data.coco import fingerprint, load_split
from faap.detector import load_detector
from faap.errors import UserError
from faap.evaluate import Evaluator, summarize
from faap.generator import PerturbationGenerator
from faap.trainer import read_run_config, resolve_device
from faap.variants import config_class, make_config


def run_config(run_dir: str):
    """The run's config object, rebuilt from its recorded ``config.yaml``."""
    recorded = read_run_config(run_dir)
    cls = config_class(recorded["variant"])
    return make_config(recorded["variant"], {k: v for k, v in recorded.items() if k in field_names(cls) and k != "variant"}), recorded


def open_run(run_dir: str, epoch: int | None = None, split: str = "val", device="cpu"):
    """(config, checkpoint state, the split's groups, the frozen detector) of a saved run."""
    cfg, recorded = run_config(run_dir)
    state = ckpt.load(run_dir, epoch, map_location=device)
    if fingerprint(cfg.data) != recorded.get("dataset_fingerprint"):
        raise UserError(f"dataset {cfg.data} changed since the run (fingerprint differs)")
    groups = load_split(cfg.data, split)
    categories = {c["id"]: c["name"] for c in groups["male"].coco.get("categories", [])}
    return cfg, state, groups, load_detector(cfg.detector, device, categories or None)


def reevaluate(run_dir: str, epoch: int | None = None, split: str = "val", device: str = "auto",
               max_images: int | None = None) -> dict:
    """Metrics of the checkpoint of ``epoch`` (default: the selected one, else the last) on ``split``.

    Evaluation uses the eps recorded in that checkpoint, never a hand-set value.
    """
    if epoch is None:
        summary = os.path.join(run_dir, "summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                epoch = json.load(f)["selected_epoch"]
    dev = resolve_device(device)
    cfg, state, groups, detector = open_run(run_dir, epoch, split, dev)
    generator = PerturbationGenerator(channels_last=cfg.channels_last).to(dev)
    if cfg.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    generator.load_state_dict(state["generator"])
    if max_images is None:
        max_images = cfg.eval_max_images if split == "val" else 0
    result = Evaluator(groups, detector, cfg, dev, max_images).run(generator, state["eps"])
    return {"run": run_dir, "epoch": state["epoch"], "split": split, "eps": state["eps"], **summarize(result),
            "details": result}
