"""``faap eval``: re-evaluate a saved checkpoint of a run folder (``--run``), every saved epoch of it
(``--epochs``, exploratory), or judge any generator checkpoint, the suite's or the original code's
(``--generator``), into a new run folder."""

from __future__ import annotations

import math
import os
import time

import torch

from faap import checkpoint as ckpt
from faap.config import TrainConfig, build_config, code_commit
from faap.data.coco import SPLITS, fingerprint, load_split
from faap.data.images import screen
from faap.errors import UserError, did_you_mean
from faap.evaluate import Evaluator, clean_baseline, clean_detections_path, summarize
from faap.generator import build_generator, load_generator
from faap.rundir import RunDir
from faap.runtime import apply_precision, detector_for, open_run, resolve_device
from faap.schedules import epsilon_at
from faap.trainer import eval_record, judge_split
from faap.variants import variant_of_original

EVAL_FIELDS = ("eval_size", "max_size", "batch_size", "perturb_padding", "num_workers")
"""Settings of a judged checkpoint's evaluation: from a suite checkpoint's recorded config, then ``--set``."""

EXPLORATORY_NOTE = ("exploratory: epochs evaluated on {split} one by one; choosing an epoch by these numbers is "
                    "selection on {split}. The run selects on val (selected_epoch, summary.json).")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (use {', '.join(SPLITS)}){did_you_mean(split, SPLITS)}")
    return split


def run_generator(cfg, state: dict, device):
    """G of a run's checkpoint ``state``, in eval mode: the one place ``--run`` builds it."""
    return build_generator(cfg.channels_last, device, state["generator"]).eval()


def _max_images(cfg, split: str) -> int:
    """Images per group a re-evaluation uses: val as in training (``eval_max_images``), else all."""
    return cfg.eval_max_images if split == "val" else 0


def reevaluate(run_dir: str, epoch: int | None = None, split: str = "val", device: str = "auto",
               max_images: int | None = None) -> dict:
    """Metrics of the checkpoint of ``epoch`` (default: the selected one, else the last) on ``split``.

    Evaluation uses the eps recorded in that checkpoint, never a hand-set value.
    """
    check_split(split)
    if epoch is None:
        epoch = RunDir(run_dir).selected_epoch()
    dev = resolve_device(device)
    cfg, state, groups, detector = open_run(run_dir, epoch, split, dev)
    generator = run_generator(cfg, state, dev)
    if max_images is None:
        max_images = _max_images(cfg, split)
    result = Evaluator(groups, detector, cfg, dev, max_images).run(generator, state["eps"])
    return {"run": run_dir, "epoch": state["epoch"], "split": split, "eps": state["eps"], **summarize(result),
            "details": result}


def epochs_to_evaluate(spec: str, run_dir: str) -> list[int]:
    """The epochs ``--epochs`` names (``all`` or a list like ``0,2``), each with a saved checkpoint."""
    saved = RunDir(run_dir).checkpoint_epochs()
    if not saved:
        raise UserError(f"no checkpoints in {os.path.join(run_dir, 'checkpoints')}")
    if spec.strip() == "all":
        return saved
    try:
        wanted = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        wanted = []
    if not wanted:
        raise UserError(f"--epochs takes 'all' or epoch numbers like 0,2 (got '{spec}')")
    missing = [e for e in wanted if e not in saved]
    if missing:
        raise UserError(f"--epochs: no checkpoint for epoch {missing[0]} in {run_dir} "
                        f"(saved: {', '.join(map(str, saved))})")
    return wanted


def evaluate_epochs(run_dir: str, spec: str, split: str = "test", device: str = "auto", report=None) -> list[dict]:
    """Evaluate the checkpoints of the epochs ``spec`` names on ``split``; write each one's eval record,
    marked ``"exploratory": true``, to ``eval/exploratory/{split}_epoch_NNNN.json``.

    The run's selection, ``summary.json``, ``metrics.jsonl`` and ``eval/*.json`` are never touched:
    the researchers' per-epoch test tables live beside them, for the report to show the bias of
    choosing an epoch on test. ``report(record)`` is called as each record is written.
    """
    check_split(split)
    run = RunDir(run_dir)
    recorded = run.read_config()  # one line when it is not a run folder
    epochs = epochs_to_evaluate(spec, run_dir)
    dev = resolve_device(device)
    cfg, state, groups, detector = open_run(run_dir, epochs[0], split, dev)
    recorded = {**recorded, "detector_id": detector.detector_id}  # the detector that made these numbers
    evaluator = Evaluator(groups, detector, cfg, dev, _max_images(cfg, split))
    baseline = clean_baseline(evaluator, recorded["dataset_fingerprint"], split)
    marks = {"exploratory": True, "note": EXPLORATORY_NOTE.format(split=split), "selected_epoch": run.selected_epoch(),
             "max_images": evaluator.settings["max_images"]}
    records = []
    for epoch in epochs:
        state = state if state["epoch"] == epoch else ckpt.load(run_dir, epoch, map_location=dev)
        result = evaluator.run(run_generator(cfg, state, dev), state["eps"])
        record = {**eval_record(split, epoch, state["eps"], result, baseline, recorded, ckpt.path_for(run_dir, epoch)),
                  **marks}
        run.write_json(run.exploratory_path(split, epoch), record)
        records.append(record)
        if report:
            report(record)
    return records


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
    apply_precision(cfg, dev)
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
