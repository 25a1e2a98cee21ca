"""One trial = one training run per seed with the trial's parameters, through the one trainer.

The trial's value is the mean over seeds of each objective's validation metric at each
run's selected epoch; each seed's values, run folder, W&B run and selected epoch are kept
as user attributes. A retried trial (worker lost) gets the same ``trial_dir``, so every
seed's run resumes from its last epoch checkpoint (``resumed_from_epoch``).
"""

from __future__ import annotations

import os
import statistics

import optuna

from ablations.spec import StudySpec
from faap.rundir import RunDir
from faap.tracking import WandbTracker
from faap.trainer import Run
from faap.variants import make_config


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict:
    """The trial's parameters (fixed ones for enqueued grid points and retries)."""
    params = {}
    for p in spec.params:
        if p.type == "float":
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            params[p.name] = trial.suggest_categorical(p.name, p.choices)
    return params


class PruningReporter:
    """Reports each epoch's validation metric; step = seed index x epochs + epoch."""

    def __init__(self, trial: optuna.Trial, metric: str, seed_index: int, epochs: int, enabled: bool):
        self.trial, self.metric, self.offset, self.enabled = trial, metric, seed_index * epochs, enabled

    def on_start(self, run, start: int):
        for r in run.history():  # a resumed run re-reports the epochs it already has
            if r["epoch"] < start:
                self._report(r)

    def _report(self, record):
        if self.enabled and record.get(self.metric) is not None:
            self.trial.report(record[self.metric], self.offset + record["epoch"])

    def on_epoch_end(self, run, epoch: int, record: dict):
        self._report(record)
        if self.enabled and self.trial.should_prune():
            self.trial.set_user_attr("pruned_at", {"step": self.offset + epoch, "last_epoch": record})
            raise optuna.TrialPruned(f"pruned at epoch {epoch} of seed {run.cfg.seed} "
                                     f"({self.metric} {record[self.metric]:+.4f})")


class EpochLogger:
    """One line per epoch (workers run without progress bars)."""

    def __init__(self, prefix: str, log=print):
        self.prefix, self.log = prefix, log

    def on_epoch_end(self, run, epoch: int, record: dict):
        self.log(f"{self.prefix} epoch {epoch}: val AP male {record['AP_male']:.4f} female {record['AP_female']:.4f} "
                 f"gap {record['AP_gap']:+.4f} (clean {record['baseline_AP_gap']:+.4f}), AR gap {record['AR_gap']:+.4f}")


def run_name(trial_number: int, seed: int, params: dict) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    return f"t{trial_number:03d}-s{seed}-" + ",".join(f"{k}={fmt(v)}" for k, v in params.items())


def run_trial(trial: optuna.Trial, spec: StudySpec, study_dir: str, variant: str | None = None,
              params: dict | None = None, wandb_mode: str = "auto", progress: bool = False, log=print) -> list[float]:
    """Train every seed of one trial; return the objective values (means over seeds)."""
    variant = variant or spec.variant
    is_baseline = variant != spec.variant
    if params is None:
        params = suggest(trial, spec)
    trial_dir = trial.user_attrs.get("trial_dir") or os.path.join(
        study_dir, f"baseline-{variant}" if is_baseline else f"trial_{trial.number:04d}")
    trial.set_user_attr("trial_dir", trial_dir)
    metrics = [o["metric"] for o in spec.objectives]
    per_seed, resumed_from = {}, None
    for i, seed in enumerate(spec.seeds_of(is_baseline)):
        if is_baseline:
            values = {**_shared(spec.base), **_shared(spec.fixed), "seed": seed, "data": spec.data,
                      "detector": spec.detector}
        else:
            values = spec.trial_values(params, seed)
        values.setdefault("select_metric", metrics[0])
        cfg = make_config(variant, values)
        run = RunDir.of_seed(trial_dir, seed)
        run_dir = run.path
        done = run.checkpoint_epochs()
        if done and resumed_from is None and not run.finished():
            resumed_from = done[-1] + 1
            trial.set_user_attr("resumed_from_epoch", resumed_from)
        tracker = WandbTracker(wandb_mode, group=spec.study,
                               job_type=variant, name=run_name(trial.number, seed, params),
                               tags=[spec.study, variant, f"seed{seed}", "baseline" if is_baseline else "trial"],
                               extra_config={"trial_number": trial.number, "trial_params": params, "study": spec.study})
        callbacks = [PruningReporter(trial, metrics[0], i, cfg.epochs, len(metrics) == 1 and not is_baseline), tracker,
                     EpochLogger(f"  {variant} trial {trial.number} seed {seed}", log)]
        try:
            summary = Run(cfg, run_dir, progress=progress).fit(resume=True, callbacks=callbacks)
        except optuna.TrialPruned:
            tracker.close(0)
            raise
        except BaseException:
            tracker.close(1)
            raise
        tracker.close(0)
        per_seed[seed] = summary
        trial.set_user_attr(f"seed_{seed}", {
            "values": [summary["val"][m] for m in metrics], "selected_epoch": summary["selected_epoch"],
            "val": summary["val"], "test": summary["test"], "run_dir": run_dir, "wandb": tracker.path})
    values = [statistics.fmean(s["val"][m] for s in per_seed.values()) for m in metrics]
    trial.set_user_attr("values_per_seed", {str(s): [v["val"][m] for m in metrics] for s, v in per_seed.items()})
    if spec.constraints:
        trial.set_user_attr("constraints", constraint_values(spec, per_seed))
    return values


def _shared(values: dict) -> dict:
    """The values every variant understands (baselines get the study's schedule and sizes)."""
    from faap.config import TrainConfig, field_names

    shared = set(field_names(TrainConfig))
    return {k: v for k, v in values.items() if k in shared}


def constraint_values(spec: StudySpec, per_seed: dict) -> list[float]:
    """Optuna's convention: feasible when every value <= 0 (here: drop vs clean minus its bound)."""
    out = []
    for c in spec.constraints:
        metric = c["metric"].replace("_drop", "")
        drops = [s["baseline"]["val"][metric] - s["val"][metric] for s in per_seed.values()]
        out.append(statistics.fmean(drops) - c["max"])
    return out
