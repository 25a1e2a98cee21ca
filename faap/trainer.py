"""The one trainer: train, evaluate on val, log, checkpoint each epoch; select on val; test once.

Its run folder's layout (config, per-epoch metrics, eval JSON, checkpoints, summary) is
:class:`faap.rundir.RunDir`'s.
"""

from __future__ import annotations

import copy
import os
import time

import torch

from faap import distributed as dist
from faap import checkpoint as ckpt
from faap.config import code_commit
from faap.data.coco import SPLITS, fingerprint, load_split
from faap.data.images import screen
from faap.data.loader import SAMPLERS, GenderDetection, make_loader
from faap.data.transforms import build_transforms
from faap.ema import EMA
from faap.engine import current_eps, train_one_epoch
from faap.errors import UserError
from faap.evaluate import (Evaluator, clean_baseline, clean_detections_path, nan_to_none, summarize,
                           write_detections)
from faap.metrics import METRICS
from faap.rundir import RunDir
from faap.runtime import apply_precision, detector_for, initial_modules, resolve_device
from faap.schedules import beta_at, lr_scheduler


COMPUTE_ONLY = ("device", "num_workers", "g_checkpointing")
"""Config keys that change how a run computes, not its results: a run may resume with others."""


def eval_record(split: str, epoch: int, eps: float, result: dict, baseline: dict, resolved: dict,
                generator_checkpoint: str) -> dict:
    """The eval JSON of one checkpoint on one split, perturbed against the clean detector."""
    pert, base = summarize(result), summarize(baseline)
    meta = {k: resolved[k] for k in ("variant", "seed", "dataset_fingerprint", "detector_id", "code_commit")}
    return {
        "split": split, "epoch": epoch, "hyperparams": {"epsilon": eps, "generator_checkpoint": generator_checkpoint},
        "baseline": {g: {"AP": base[f"AP_{g}"], "AR": base[f"AR_{g}"]} for g in ("male", "female")},
        "perturbed": {g: {"AP": pert[f"AP_{g}"], "AR": pert[f"AR_{g}"]} for g in ("male", "female")},
        "gaps": {m: {"baseline": base[f"{m}_gap"], "perturbed": pert[f"{m}_gap"]} for m in ("AP", "AR")},
        "deltas": {f"{m}_{g}": pert[f"{m}_{g}"] - base[f"{m}_{g}"] for m in ("AP", "AR") for g in ("male", "female")},
        "details": {"baseline": baseline, "perturbed": result}, "meta": meta,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def judge_split(out_dir: str, evaluator: Evaluator, generator, eps: float, split: str, epoch: int,
                fingerprint_: str, resolved: dict, generator_checkpoint: str) -> tuple[dict, dict]:
    """Evaluate ``generator`` once on ``split``; write the run folder's ``eval/{split}_epoch_NNNN.json``
    and ``eval/{split}_detections.json.gz`` (read by the paired bootstraps). Returns (result, clean)."""
    baseline = clean_baseline(evaluator, fingerprint_, split)
    dets, run = {}, RunDir(out_dir)
    result = evaluator.run(generator, eps, detections=dets)
    os.makedirs(run.file("eval"), exist_ok=True)
    write_detections(run.detections_path(split), dets, evaluator.image_ids)
    run.write_json(run.eval_path(split, epoch), eval_record(split, epoch, eps, result, baseline, resolved,
                                                            generator_checkpoint))
    return result, baseline


class Run:
    """Everything one training run needs, built and validated before anything is written."""

    def __init__(self, cfg, out_dir: str, progress: bool = True):
        self.cfg, self.out_dir, self.progress = cfg, out_dir, progress
        self.dir = RunDir(out_dir)
        self.rank, self.world = dist.setup()
        self.device = resolve_device(cfg.device) if self.world == 1 else dist.device_for(cfg.device)
        apply_precision(cfg, self.device)
        # Every image is checked before training: a bad one would otherwise stop the run at its
        # first evaluation with a traceback that does not name the file.
        splits, skipped = screen({s: load_split(cfg.data, s) for s in SPLITS}, cfg.skip_bad_images,
                                 progress and self.rank == 0)
        self.train_groups, self.val_groups, self.test_groups = (splits[s] for s in SPLITS)
        self.fingerprint = fingerprint(cfg.data)
        self.detector = detector_for(cfg.detector, self.val_groups, self.device, cfg.aux_loss)
        self.generator, self.variant = initial_modules(cfg, self.detector.hidden_dim, self.device)
        params = list(self.generator.parameters()) + self.variant.g_parameters()
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.opt_g = opt_cls(params, lr=cfg.lr_g, weight_decay=cfg.weight_decay)
        self.variant.optimizers = self.variant.make_optimizers()
        self.optimizers = {"generator": self.opt_g, **self.variant.optimizers}
        tf = build_transforms(True, cfg.train_scales, cfg.max_size, cfg.eval_size, cfg.random_crop)
        ds = GenderDetection(self.train_groups, tf, self.detector.category_to_label)
        self.sampler = SAMPLERS[cfg.sampler](ds.group_index, cfg.seed, cfg.max_train_per_gender, cfg.epoch_samples,
                                             self.rank, self.world)
        self.loader = make_loader(ds, cfg.batch_size, self.sampler, cfg.num_workers, seed=cfg.seed, device=self.device)
        scheduler = lr_scheduler(self.opt_g, cfg, len(self.loader))
        self.schedulers = {"generator": scheduler} if scheduler is not None else {}
        self.ema = EMA(self.generator, self.variant, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.eval_generator = copy.deepcopy(self.generator) if self.ema else self.generator
        """The G every evaluation uses: with an EMA, its averaged weights (:meth:`refresh_eval_generator`)."""
        self.val = Evaluator(self.val_groups, self.detector, cfg, self.device, cfg.eval_max_images)
        provenance = {"dataset_fingerprint": self.fingerprint, "detector_id": self.detector.detector_id,
                      "code_commit": code_commit(), "torch": str(torch.__version__),
                      "threads": torch.get_num_threads(),  # CPU results depend on it (reduction order)
                      "world_size": self.world,
                      "skipped_bad_images": {k: [os.path.relpath(p, cfg.data) for p in v] for k, v in skipped.items()}}
        self.resolved = {**cfg.to_dict(), **provenance}

    # ---- files --------------------------------------------------------------------------
    def prepare_dir(self, resume: bool) -> int:
        """Create or check the run folder; return the first epoch to train."""
        if os.path.exists(self.dir.config_path):
            old = self.dir.read_config()
            keys = [k for k in self.cfg.to_dict() if k not in COMPUTE_ONLY]
            defaults = type(self.cfg)().to_dict()  # a key recorded before it existed had its default
            changed = [k for k in keys if old.get(k, defaults[k]) != self.resolved[k]]
            if not resume:
                raise UserError(f"run folder {self.out_dir} already holds a run (resume it with --resume, "
                                f"or choose another --out)")
            if changed or old.get("dataset_fingerprint") != self.fingerprint:
                what = changed[0] if changed else "dataset_fingerprint"
                raise UserError(f"cannot resume {self.out_dir}: '{what}' differs from the recorded config")
            epochs = ckpt.list_epochs(self.out_dir)
            return epochs[-1] + 1 if epochs else 0
        if self.rank == 0:
            self.dir.write_config(self.resolved)
        return 0

    def restore(self, epoch: int) -> None:
        state = ckpt.load(self.out_dir, epoch, map_location=self.device)
        trained = ckpt.trained_weights(state)
        self.generator.load_state_dict(trained["generator"])
        self.variant.load_state_dict(trained["variant"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        ckpt.set_rng_state(state["rng"])

    def refresh_eval_generator(self) -> None:
        """Put the EMA's averaged weights (and G's current BatchNorm statistics) into the evaluated G."""
        if self.ema is not None:
            self.eval_generator.load_state_dict(self.ema.averaged("generator", self.generator))

    def history(self) -> list[dict]:
        return self.dir.read_metrics()

    # ---- evaluation ------------------------------------------------------------------------
    def eval_record(self, split: str, epoch: int, eps: float, result: dict, baseline: dict) -> dict:
        return eval_record(split, epoch, eps, result, baseline, self.resolved, ckpt.path_for(self.out_dir, epoch))

    # ---- the loop --------------------------------------------------------------------------
    def fit(self, resume: bool = False, callbacks=()) -> dict:
        cfg = self.cfg
        start = self.prepare_dir(resume) if self.rank == 0 else 0
        dist.barrier()
        if self.rank != 0 and resume:
            epochs = ckpt.list_epochs(self.out_dir)
            start = epochs[-1] + 1 if epochs else 0
        if start > 0:
            self.restore(start - 1)
        val_base = clean_baseline(self.val, self.fingerprint, "val") if self.rank == 0 else None
        history = [r for r in self.history() if r["epoch"] < start]
        if self.rank == 0 and os.path.isfile(self.dir.metrics_path):
            # Drop records of epochs that were not committed by a checkpoint (they are redone).
            self.dir.rewrite_metrics(history)
        for cb in callbacks:
            getattr(cb, "on_start", lambda run, start: None)(self, start)
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            train_logs = self.train_epoch(epoch)
            eps = current_eps(cfg, epoch)
            train_seconds = time.time() - t0
            if self.rank == 0:
                val_dets = {}
                result = self.val.run(self.eval_generator, eps, detections=val_dets)
                self.dir.write_json(self.dir.eval_path("val", epoch), self.eval_record("val", epoch, eps, result, val_base))
                record = {"epoch": epoch, "split": "val", "eps": eps,
                          "beta": beta_at(epoch, cfg.beta_start, cfg.beta_final, cfg.epochs),
                          **summarize(result), **{f"baseline_{k}": v for k, v in summarize(val_base).items()},
                          **train_logs, "train_seconds": train_seconds, "epoch_seconds": time.time() - t0}
                self.dir.append_metrics(nan_to_none(record))
                history.append(record)
                if self.select(history)["epoch"] == epoch:  # the best so far: keep its detections for bootstraps
                    write_detections(self.dir.detections_path("val"), val_dets, self.val.image_ids)
                # The checkpoint is the commit point of an epoch: a run killed before it redoes the epoch.
                ckpt.save(self.out_dir, epoch, eps, self.generator, self.variant, self.optimizers, self.resolved,
                          self.schedulers, self.ema)
                if cfg.keep_checkpoints == "last":
                    ckpt.prune(self.out_dir, {epoch, self.select(history)["epoch"]})
                if self.progress:
                    print(f"epoch {epoch}: val AP male {record['AP_male']:.4f} female {record['AP_female']:.4f} "
                          f"gap {record['AP_gap']:+.4f} (clean {record['baseline_AP_gap']:+.4f}), "
                          f"AR gap {record['AR_gap']:+.4f}, {record['epoch_seconds']:.0f}s", flush=True)
                for cb in callbacks:
                    cb.on_epoch_end(self, epoch, record)
            dist.barrier()
        summary = self.finish(history) if self.rank == 0 else {}
        if self.rank == 0:
            for cb in callbacks:
                getattr(cb, "on_finish", lambda run, summary: None)(self, summary)
        dist.barrier()
        return summary

    def train_epoch(self, epoch: int) -> dict:
        """One epoch's training steps (logged means), then a per-epoch LR step and the evaluated G's refresh."""
        self.sampler.set_epoch(epoch)
        self.loader.generator.manual_seed(self.cfg.seed * 1000 + epoch)
        logs = train_one_epoch(self.loader, self.generator, self.detector, self.variant, self.opt_g, epoch,
                               self.device, self.progress and self.rank == 0,
                               dist.average_gradients if self.world > 1 else None, **self.step_hooks())
        if self.cfg.lr_step_every == "epoch":
            for scheduler in self.schedulers.values():
                scheduler.step()
        self.refresh_eval_generator()
        if self.world > 1:
            dist.assert_in_sync([p for o in self.optimizers.values() for g in o.param_groups for p in g["params"]])
        return logs

    def step_hooks(self) -> dict:
        """train_one_epoch's ``after_step`` (the EMA) and ``after_batch`` (a per-step LR schedule) hooks."""
        per_batch = self.cfg.lr_step_every == "step"
        return {"after_step": [self.ema.update] if self.ema is not None else [],
                "after_batch": [s.step for s in self.schedulers.values()] if per_batch else []}

    def select(self, history: list[dict]) -> dict:
        """The validation record of the selected epoch (ties: the earliest)."""
        return METRICS[self.cfg.select_metric].best(history)

    def finish(self, history: list[dict]) -> dict:
        """Test the selected checkpoint once; write summary.json."""
        t0 = time.time()
        best = self.select(history)
        epoch = best["epoch"]
        state = ckpt.load(self.out_dir, epoch, map_location=self.device)
        self.generator.load_state_dict(state["generator"])
        test = Evaluator(self.test_groups, self.detector, self.cfg, self.device)
        result, test_base = judge_split(self.out_dir, test, self.generator, state["eps"], "test", epoch, self.fingerprint,
                                        self.resolved, ckpt.path_for(self.out_dir, epoch))
        val_base = clean_baseline(self.val, self.fingerprint, "val")
        summary = self.dir.write_summary(
            self.resolved, selected_epoch=epoch, select_metric=self.cfg.select_metric, epochs_completed=len(history),
            eps=state["eps"], metrics={"val": {k: best[k] for k in summarize(val_base)}, "test": summarize(result)},
            baseline={"val": summarize(val_base), "test": summarize(test_base)}, started=t0,  # the one test evaluation
            clean_detections={"val": clean_detections_path(self.val, self.fingerprint, "val"),
                              "test": clean_detections_path(test, self.fingerprint, "test")})
        if self.progress:
            print(f"selected epoch {epoch} on val ({self.cfg.select_metric}); test AP gap "
                  f"{summary['test']['AP_gap']:+.4f} (clean {summary['baseline']['test']['AP_gap']:+.4f})", flush=True)
        return summary
