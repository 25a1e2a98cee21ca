"""Load a finished (or running) study into tidy pandas frames and per-condition run lists.

A *condition* is what a report compares: ``clean`` (the unperturbed detector), each baseline
variant (run with its defaults; the study's variant names its reference) and each trial of the study
(``trial N``), each with one run folder per seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
from optuna.trial import TrialState

from ablations.storage import data_root
from ablations.study import baseline_studies, load
from faap.rundir import RunDir


@dataclass
class Condition:
    name: str
    kind: str
    """'clean', 'baseline' or 'trial'."""
    runs: list[str] = field(default_factory=list)
    """Run folders (one per seed) that finished (summary.json written)."""
    params: dict = field(default_factory=dict)
    value: float | None = None
    state: str = "COMPLETE"


@dataclass
class StudyData:
    name: str
    storage: str | None
    spec: object
    study: object
    clean: dict
    conditions: dict[str, Condition]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    intermediate: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Values reported to the pruner: trial, step (seed index x epochs + epoch), value."""

    def run_summary(self, run_dir: str) -> dict:
        return RunDir(run_dir).read_summary()


def _seed_runs(trial) -> list[str]:
    runs = []
    for key, attr in sorted(trial.user_attrs.items()):
        if re.fullmatch(r"seed_\d+", key) and RunDir(attr["run_dir"]).finished():
            runs.append(attr["run_dir"])
    return runs


GROUP_SUFFIXES = (("_female", "female"), ("_male", "male"), ("_f", "female"), ("_m", "male"))


def split_group(metric: str) -> tuple[str, str | None]:
    """``AP_female`` -> (``AP``, ``female``); ``obj_score_m`` -> (``obj_score``, ``male``); else no group."""
    if metric.startswith("baseline_"):
        return metric, None
    for suffix, group in GROUP_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)], group
    return metric, None


def tidy(epochs: pd.DataFrame) -> pd.DataFrame:
    """The epochs frame with a ``group`` column: one row per run, seed, epoch, split, condition, group, metric."""
    parts = epochs["metric"].map(split_group)
    return epochs.assign(metric=parts.map(lambda p: p[0]), group=parts.map(lambda p: p[1]))


def _epoch_rows(run_dir: str, condition: str, trial: int | None) -> list[dict]:
    run, rows = RunDir(run_dir), []
    for rec in run.read_metrics():
        for metric, value in rec.items():
            if isinstance(value, (int, float)) and metric != "epoch":
                rows.append({"condition": condition, "trial": trial, "seed": run.seed, "run": run_dir,
                             "epoch": rec["epoch"], "split": "val", "metric": metric, "value": value})
    return rows


def load_study_data(name: str, url: str | None) -> StudyData:
    """Everything a report reads about study ``name``; reads only (a missing benchmark is not written)."""
    stored = load(name, url)
    study, spec = stored
    spec.data = data_root(spec.data)  # 'synthetic' -> the built-in benchmark's folder
    conditions = {"clean": Condition("clean", "clean")}
    trial_rows, epoch_rows, inter_rows = [], [], []
    for bs in baseline_studies(stored, url):
        variant = bs.user_attrs["variant"]
        done = [t for t in bs.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if done:
            conditions[variant] = Condition(variant, "baseline", _seed_runs(done[-1]), {}, done[-1].values[0])
            for r in conditions[variant].runs:
                epoch_rows += _epoch_rows(r, variant, None)
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name, **{f"param_{k}": v for k, v in t.params.items()},
               "user_attrs": dict(t.user_attrs)}
        inter_rows += [{"trial": t.number, "step": step, "value": v} for step, v in t.intermediate_values.items()]
        for i, o in enumerate(spec.objectives):
            row[o["metric"]] = t.values[i] if t.values else (t.value if t.state == TrialState.PRUNED else None)
        for key, attr in t.user_attrs.items():
            if re.fullmatch(r"seed_\d+", key):
                for i, o in enumerate(spec.objectives):  # one column per objective and seed
                    row[f"{o['metric']}_{key}"] = attr["values"][i]
        trial_rows.append(row)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            cname = f"trial {t.number}"
            runs = _seed_runs(t)
            if t.state == TrialState.COMPLETE:
                conditions[cname] = Condition(cname, "trial", runs, dict(t.params), t.values[0], t.state.name)
            trial_dir = t.user_attrs.get("trial_dir", "")
            for seed in spec.seeds:
                epoch_rows += _epoch_rows(RunDir.of_seed(trial_dir, seed).path, cname, t.number)
    return StudyData(name, url, spec, study, study.user_attrs.get("clean_baseline", {}), conditions,
                     pd.DataFrame(trial_rows), pd.DataFrame(epoch_rows), pd.DataFrame(inter_rows))
