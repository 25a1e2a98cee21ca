"""``faap eval``: re-evaluate a saved checkpoint of a run folder (``--run``), or judge any generator
checkpoint, the suite's or the original code's (``--generator``), into a new run folder."""

from __future__ import annotations

import math
import os
import time

import torch

from faap import checkpoint as ckpt
from faap.config import TrainConfig, build_config, code_commit
from faap.data.coco import fingerprint, load_split
from faap.data.images import screen
from faap.errors import UserError
from faap.evaluate import Evaluator, clean_detections_path, summarize
from faap.generator import build_generator, load_generator
from faap.rundir import RunDir
from faap.runtime import detector_for, open_run, resolve_device
from faap.schedules import epsilon_at
from faap.trainer import judge_split
from faap.variants import variant_of_original

EVAL_FIELDS = ("eval_size", "max_size", "batch_size", "perturb_padding", "num_workers")
"""Settings of a judged checkpoint's evaluation: from a suite checkpoint's recorded config, then ``--set``."""


def reevaluate(run_dir: str, epoch: int | None = None, split: str = "val", device: str = "auto",
               max_images: int | None = None) -> dict:
    """Metrics of the checkpoint of ``epoch`` (default: the selected one, else the last) on ``split``.

    Evaluation uses the eps recorded in that checkpoint, never a hand-set value.
    """
    if epoch is None:
        epoch = RunDir(run_dir).selected_epoch()
    dev = resolve_device(device)
    cfg, state, groups, detector = open_run(run_dir, epoch, split, dev)
    generator = build_generator(cfg.channels_last, dev, state["generator"])
    if max_images is None:
        max_images = cfg.eval_max_images if split == "val" else 0
    result = Evaluator(groups, detector, cfg, dev, max_images).run(generator, state["eps"])
    return {"run": run_dir, "epoch": state["epoch"], "split": split, "eps": state["eps"], **summarize(result),
            "details": result}


def _original_scheduled_eps(obj: dict) -> float | None:
    """The eps the original's schedule gave at the checkpoint's epoch (from its saved ``args``)."""
    args, epoch = obj.get("args"), obj.get("epoch")
    if not isinstance(args, dict) or not isinstance(epoch, int):
        return None
    try:
        return epsilon_at(epoch, args["epsilon"], args["epsilon_final"], args["epsilon_min"],
                          args["epsilon_warmup_epochs"], args["epsilon_hold_epochs"], args["epsilon_cooldown_epochs"])
    except KeyError:
        return None


def describe_checkpoint(obj, eps: float | None) -> dict:
    """Format, variant, epoch and the eps to evaluate with; one-line errors for a wrong eps."""
    suite = isinstance(obj, dict) and isinstance(obj.get("config"), dict) and "eps" in obj
    if suite:
        info = {"format": "faap", "variant": obj["config"].get("variant", ""), "epoch": int(obj.get("epoch", 0)),
                "recorded_eps": obj["eps"], "config": obj["config"]}
        if eps is not None and not math.isclose(eps, obj["eps"], rel_tol=1e-9):
            raise UserError(f"--eps {eps} differs from the eps {obj['eps']} this checkpoint was trained with "
                            f"at epoch {info['epoch']} (omit --eps to use it)")
        eps = obj["eps"] if eps is None else eps
    else:
        obj = obj if isinstance(obj, dict) else {}
        variant = variant_of_original(obj)
        info = {"format": "original", "variant": variant, "epoch": int(obj.get("epoch", 0) or 0),
                "scheduled_eps": _original_scheduled_eps(obj), "config": {}}
        if eps is None:
            hint = f" (its schedule gives {info['scheduled_eps']:.4g} at epoch {info['epoch']})" if info["scheduled_eps"] else ""
            raise UserError(f"--eps is required for an original checkpoint: it does not record the eps it was "
                            f"trained with{hint}")
    if not (math.isfinite(eps) and 0 < eps <= 1):
        raise UserError(f"--eps must be in (0, 1] in ImageNet-normalised pixel units (got {eps}; the original "
                        f"trained with 0.05-0.10)")
    return {**info, "eps": eps}


def _check_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"output folder {out_dir} already exists and is not empty (choose another --out)")


def judge_generator(checkpoint: str, data: str, detector_spec: str, out_dir: str, eps: float | None = None,
                    split: str = "test", device: str = "auto", skip_bad_images: bool = False,
                    settings: dict | None = None) -> dict:
    """Evaluate a generator checkpoint (the suite's or the original's) clean and perturbed on ``split``,
    writing a run folder (config.yaml, checkpoints/, eval/{split}_epoch_NNNN.json, eval/{split}_detections
    .json.gz, summary.json) that the run loaders and the paired bootstraps read like a trained run's.
    Everything is checked before the first file is written."""
    _check_out_dir(out_dir)
    unknown = [k for k in settings or {} if k not in EVAL_FIELDS]
    if unknown:
        raise UserError(f"--set {unknown[0]}: not an evaluation setting (use {', '.join(EVAL_FIELDS)})")
    dev = resolve_device(device)
    generator, obj = load_generator(checkpoint, dev)
    info = describe_checkpoint(obj, eps)
    values = {"data": data, "detector": detector_spec, "device": device, "skip_bad_images": skip_bad_images,
              **{k: info["config"][k] for k in EVAL_FIELDS if k in info["config"]}, **(settings or {})}
    cfg = build_config(TrainConfig, values)
    screened, skipped = screen({split: load_split(data, split)}, skip_bad_images)
    groups = screened[split]
    detector = detector_for(detector_spec, groups, dev)
    evaluator = Evaluator(groups, detector, cfg, dev)
    fp = fingerprint(data)
    resolved = {**cfg.to_dict(), "variant": info["variant"], "seed": None, "dataset_fingerprint": fp,
                "detector_id": detector.detector_id, "code_commit": code_commit(), "torch": str(torch.__version__),
                "threads": torch.get_num_threads(), "generator_checkpoint": os.path.abspath(checkpoint),
                "checkpoint_format": info["format"],
                "checkpoint_epoch": info["epoch"], "epochs": None,  # None: not trained here
                "skipped_bad_images": {k: [os.path.relpath(p, data) for p in v] for k, v in skipped.items()}}
    return _write_judged(out_dir, evaluator, generator, info, split, resolved)


def _write_judged(out_dir, evaluator, generator, info, split, resolved) -> dict:
    t0, run = time.time(), RunDir(out_dir)
    run.write_config(resolved)
    epoch, eps = info["epoch"], info["eps"]
    ckpt.save_generator(out_dir, epoch, eps, generator, resolved)
    result, base = judge_split(out_dir, evaluator, generator, eps, split, epoch, resolved["dataset_fingerprint"],
                               resolved, resolved["generator_checkpoint"])
    return run.write_summary(
        resolved, selected_epoch=epoch, eps=eps, metrics={split: summarize(result)},
        baseline={split: summarize(base)}, started=t0, split=split,
        clean_detections={split: clean_detections_path(evaluator, resolved["dataset_fingerprint"], split)},
        generator_checkpoint=resolved["generator_checkpoint"], checkpoint_format=info["format"],
        scheduled_eps=info.get("scheduled_eps"))
