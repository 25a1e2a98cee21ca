"""W&B tracking of one training run, as a trainer callback. W&B problems never fail a run.

One W&B run per (trial, seed): group = study, job_type = variant, a readable name, tags,
config = the full resolved config, per-epoch metrics against ``epoch``, a few example
images per epoch (clean, perturbed, amplified perturbation; one image per group), the
selected epoch's metrics as summary, and the eval JSON as an artifact. Mode ``auto`` is
online when the user is logged in and offline otherwise; ``off`` disables it. Every W&B
file stays inside the run folder (``RUN/wandb``).
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np
import torch

from faap.data.transforms import denormalize
from faap.generator import perturb


def resolve_mode(mode: str) -> str:
    if mode in ("off", "disabled"):
        return "disabled"
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = os.path.expanduser("~/.netrc")
    if os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read():
        return "online"
    return "offline"


class WandbTracker:
    """Trainer callback: ``on_start``, ``on_epoch_end``, ``on_finish``; :meth:`close` always."""

    def __init__(self, mode: str = "auto", project: str = "faap-ablate", group: str | None = None,
                 job_type: str | None = None, name: str | None = None, tags=(), extra_config: dict | None = None,
                 log_images: bool = True):
        self.mode = resolve_mode(mode)
        self.kw = dict(project=project, group=group, job_type=job_type, name=name, tags=list(tags))
        self.extra_config = extra_config or {}
        self.log_images = log_images
        self.run = None
        self.path = None

    def _guard(self, what, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # W&B must never fail a run: warn and go on without it
            warnings.warn(f"W&B {what} failed, continuing without it: {type(e).__name__}: {e}")
            self.run = None

    def on_start(self, run, start_epoch: int):
        if self.mode == "disabled":
            return
        self._guard("init", self._init, run)

    def _init(self, run):
        import wandb

        wdir = os.path.join(os.path.abspath(run.out_dir), "wandb")
        os.makedirs(wdir, exist_ok=True)
        for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
            os.environ[var] = wdir
        run_id = hashlib.sha256(os.path.abspath(run.out_dir).encode()).hexdigest()[:12]
        self.run = wandb.init(dir=wdir, mode=self.mode, id=run_id, resume="allow",
                              config={**run.resolved, **self.extra_config}, reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"), **self.kw)
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.path = self.run.path if self.mode == "online" else os.path.dirname(self.run.dir)

    def on_epoch_end(self, run, epoch: int, record: dict):
        if self.run is not None:
            self._guard("log", self._log, run, epoch, record)

    def _log(self, run, epoch, record):
        import wandb

        data = {k: v for k, v in record.items() if isinstance(v, (int, float)) and v is not None}
        if self.log_images:
            data["examples"] = [wandb.Image(img, caption=cap) for cap, img in example_images(run, record["eps"])]
        self.run.log(data)

    def on_finish(self, run, summary: dict):
        if self.run is not None:
            self._guard("summary", self._finish, run, summary)

    def _finish(self, run, summary):
        import wandb

        flat = {"selected_epoch": summary["selected_epoch"]}
        for split in ("val", "test"):
            flat.update({f"{split}/{k}": v for k, v in summary[split].items()})
            flat.update({f"clean_{split}/{k}": v for k, v in summary["baseline"][split].items()})
        self.run.summary.update(flat)
        art = wandb.Artifact(f"eval-{self.run.id}", type="evaluation")
        for f in run.dir.eval_files() + [run.dir.summary_path]:
            art.add_file(f)
        self.run.log_artifact(art)

    def close(self, exit_code: int = 0):
        if self.run is not None:
            self._guard("finish", self.run.finish, exit_code)
            self.run = None


@torch.no_grad()
def example_images(run, eps: float) -> list[tuple[str, np.ndarray]]:
    """For the first validation image of each group: clean | perturbed | perturbation x (0.5 / eps)."""
    out = []
    gen = run.eval_generator  # the weights evaluated (an EMA's, when the run keeps one)
    was_training = gen.training
    gen.eval()
    for group, loader in run.val.loaders.items():
        img, _ = loader.dataset[0]
        x = img.unsqueeze(0).to(run.device)
        mask = torch.ones(1, *x.shape[-2:], dtype=torch.long, device=run.device)
        x_adv, delta = perturb(gen, x, mask, eps, run.cfg.perturb_padding)
        clean, pert = denormalize(x).clamp(0, 1), denormalize(x_adv).clamp(0, 1)
        amp = delta / eps * 0.5 + 0.5  # perturbation in normalised units, -eps..eps -> 0..1
        row = torch.cat([clean, pert, amp.clamp(0, 1)], dim=3)[0]
        out.append((f"{group}: clean | perturbed | perturbation (-eps..eps as black..white)",
                    (row.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)))
    gen.train(was_training)
    return out
