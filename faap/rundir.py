"""The one run-folder type: the layout of a run on disk, for every reader and writer.

A run folder (``faap train``, a sweep trial's seed, or a judged checkpoint)::

    config.yaml                       resolved config (+ fingerprint, detector id, code commit)
    metrics.jsonl                     one validation record per epoch
    summary.json                      selected epoch, val and test metrics (written last)
    checkpoints/epoch_NNNN.pt         per-epoch checkpoints
    eval/{split}_epoch_NNNN.json      eval JSON of one checkpoint on one split
    eval/{split}_detections.json.gz   saved detections (the paired bootstraps read them)
    eval/exploratory/{split}_epoch_NNNN.json   ``faap eval --epochs``: any epoch on any split, marked
                                      exploratory (never read for selection; summary.json is untouched)
    dumps/{split}_epoch_NNNN/         ``faap eval --dump-images``: PNGs and index.json / index.csv

A trial folder holds one run folder per seed: ``seedN``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import time

import yaml

from faap.errors import UserError


class RunDir:
    """Paths and plain reads/writes of one run folder (checkpoint contents: :mod:`faap.checkpoint`)."""

    def __init__(self, path: str):
        self.path = str(path)

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    # ---- layout ------------------------------------------------------------------------
    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    @property
    def config_path(self) -> str:
        return self.file("config.yaml")

    @property
    def metrics_path(self) -> str:
        return self.file("metrics.jsonl")

    @property
    def summary_path(self) -> str:
        return self.file("summary.json")

    def checkpoint_path(self, epoch: int) -> str:
        return self.file("checkpoints", f"epoch_{epoch:04d}.pt")

    def eval_path(self, split: str, epoch: int) -> str:
        return self.file("eval", f"{split}_epoch_{epoch:04d}.json")

    def detections_path(self, split: str) -> str:
        return self.file("eval", f"{split}_detections.json.gz")

    def exploratory_path(self, split: str, epoch: int) -> str:
        """Outside ``eval/*.json`` on purpose: readers of a run's own evaluations never see these."""
        return self.file("eval", "exploratory", f"{split}_epoch_{epoch:04d}.json")

    def dump_dir(self, split: str, epoch: int) -> str:
        return self.file("dumps", f"{split}_epoch_{epoch:04d}")

    @staticmethod
    def of_seed(trial_dir: str, seed: int) -> "RunDir":
        """The run folder of one seed of a trial."""
        return RunDir(os.path.join(trial_dir, f"seed{seed}"))

    @property
    def seed(self) -> int | None:
        """The seed in a trial's ``seedN`` folder name (None for other folders)."""
        m = re.search(r"seed(\d+)$", self.path.rstrip("/"))
        return int(m.group(1)) if m else None

    def checkpoint_epochs(self) -> list[int]:
        files = glob.glob(os.path.join(self.path, "checkpoints", "epoch_*.pt"))
        return sorted(int(re.search(r"epoch_(\d+)\.pt$", f).group(1)) for f in files)

    def eval_files(self) -> list[str]:
        return sorted(glob.glob(self.file("eval", "*.json")))

    # ---- reads -------------------------------------------------------------------------
    def has_config(self) -> bool:
        return os.path.isfile(self.config_path)

    def finished(self) -> bool:
        """Whether the run wrote its summary (its last file)."""
        return os.path.isfile(self.summary_path)

    def read_config(self) -> dict:
        if not self.has_config():
            raise UserError(f"not a run folder (no config.yaml): {self.path}")
        with open(self.config_path) as f:
            return yaml.safe_load(f) or {}

    def read_summary(self) -> dict:
        with open(self.summary_path) as f:
            return json.load(f)

    def selected_epoch(self) -> int | None:
        """The epoch the run selected on val (None before it finished)."""
        return self.read_summary()["selected_epoch"] if self.finished() else None

    def read_metrics(self) -> list[dict]:
        """The per-epoch records ([] when there are none yet)."""
        if not os.path.isfile(self.metrics_path):
            return []
        with open(self.metrics_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def read_eval(self, split: str, epoch: int) -> dict:
        with open(self.eval_path(split, epoch)) as f:
            return json.load(f)

    def read_exploratory(self, split: str) -> list[dict]:
        """The exploratory per-epoch records of ``split`` (``faap eval --epochs``), by epoch ([] if none)."""
        records = []
        for path in glob.glob(self.exploratory_path(split, 0).replace("_epoch_0000", "_epoch_*")):
            with open(path) as f:
                records.append(json.load(f))
        return sorted(records, key=lambda r: r["epoch"])

    # ---- writes ------------------------------------------------------------------------
    def write_config(self, resolved: dict) -> None:
        text = yaml.safe_dump(resolved, sort_keys=False)
        os.makedirs(self.path, exist_ok=True)
        with open(self.config_path, "w") as f:
            f.write(text)

    def write_json(self, path: str, obj) -> None:
        """``obj`` as JSON at ``path`` inside the folder (NaN -> null), written atomically."""
        from faap.evaluate import nan_to_none

        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(nan_to_none(obj), f, indent=2)
        os.replace(path + ".tmp", path)

    def write_summary(self, resolved: dict, *, selected_epoch: int, eps: float, metrics: dict, baseline: dict,
                      clean_detections: dict, started: float, select_metric: str | None = None,
                      epochs_completed: int = 0, **extra) -> dict:
        """Write ``summary.json``, the run's last file (its presence means the run finished); return it.

        The one writer of its shape, for trained runs and judged checkpoints alike. ``metrics``,
        ``baseline`` (the clean detector's) and ``clean_detections`` are keyed by split; the
        provenance is copied from ``resolved`` (the recorded config); ``started`` is when the final
        evaluation began (``final_eval_seconds``); ``extra`` holds the keys only judged checkpoints have.
        """
        summary = {
            "variant": resolved["variant"], "seed": resolved["seed"], "selected_epoch": selected_epoch,
            "select_metric": select_metric, "epochs_completed": epochs_completed, "eps": eps, **metrics,
            "baseline": baseline, **{k: resolved[k] for k in ("dataset_fingerprint", "detector_id", "code_commit")},
            "run_dir": os.path.abspath(self.path), **extra, "clean_detections": clean_detections,
            "final_eval_seconds": time.time() - started,
        }
        self.write_json(self.summary_path, summary)
        return summary

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Keep only ``records`` (e.g. drop epochs a resumed run redoes), atomically."""
        with open(self.metrics_path + ".tmp", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(self.metrics_path + ".tmp", self.metrics_path)
