"""Creating and loading studies: sampler, pruner, directions, grid points, baseline studies.

Grid studies do not use Optuna's GridSampler (it hands out duplicate points to parallel
workers, and retried trials consume grid points): every grid point is enqueued once, under
the study lock, when the study is created, and workers pop waiting trials atomically.
The spec is stored in the study (user attribute ``spec``) so that every worker and
``faap sweep resume`` rebuild the same sampler and pruner from it; :func:`load` returns it
parsed beside Optuna's study (:class:`StoredStudy`).
"""

from __future__ import annotations

import json
import warnings
from typing import NamedTuple

import optuna

from ablations.spec import StudySpec, parse_spec
from ablations.storage import backend_for
from faap.errors import UserError


def quiet_optuna() -> None:
    """Optuna's own log at WARNING (no line per trial created or finished): called where a sweep command starts."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class StoredStudy(NamedTuple):
    """A study created by ``faap sweep`` and its parsed spec (Optuna's Study has no place for the spec)."""

    study: optuna.Study
    spec: StudySpec


def baseline_study_name(study: str, variant: str) -> str:
    return f"{study}.baseline-{variant}"


def grid_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def make_sampler(spec: StudySpec, seed: int | None = None):
    def constraints(trial):
        return trial.user_attrs.get("constraints", [float("inf")] * len(spec.constraints))

    cons = constraints if spec.constraints else None
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cons)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cons)
    return optuna.samplers.RandomSampler(seed=seed)  # random; grid trials are all enqueued


def make_pruner(spec: StudySpec):
    kind = spec.pruner.get("type", "none")
    kwargs = {k: v for k, v in spec.pruner.items() if k != "type"}
    try:
        if kind == "median":
            return optuna.pruners.MedianPruner(**kwargs)
        if kind == "hyperband":
            return optuna.pruners.HyperbandPruner(**kwargs)
        if kind == "wilcoxon":
            return optuna.pruners.WilcoxonPruner(**kwargs)
    except TypeError as e:
        raise UserError(f"pruner {kind}: {e}") from None
    return optuna.pruners.NopPruner()


def create_or_load(spec: StudySpec, raw_spec: dict, url: str | None) -> StoredStudy:
    """The study for ``spec`` (created with its grid and baselines once, whoever comes first)."""
    make_pruner(spec)  # a bad pruner argument fails before anything is written
    backend = backend_for(url)
    with backend.lock(spec.study):
        storage = backend.open()
        study = optuna.create_study(study_name=spec.study, storage=storage, directions=spec.directions,
                                    sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
        stored = study.user_attrs.get("spec")
        if stored is None:
            study.set_user_attr("spec", raw_spec)
            study.set_user_attr("spec_source", spec.source)
            with warnings.catch_warnings():  # experimental in Optuna, stable enough for labels
                warnings.simplefilter("ignore")
                study.set_metric_names([o["metric"] for o in spec.objectives])
            if spec.sampler == "grid":
                for point in spec.grid():
                    study.enqueue_trial(point, user_attrs={"grid_key": grid_key(point)})
            for b in spec.baselines:
                if b == "clean":
                    continue
                bs = optuna.create_study(study_name=baseline_study_name(spec.study, b), storage=storage,
                                         directions=spec.directions, load_if_exists=True)
                bs.set_user_attr("role", "baseline")
                bs.set_user_attr("parent", spec.study)
                bs.set_user_attr("variant", b)
                bs.enqueue_trial({}, user_attrs={"role": "baseline", "variant": b})
        elif _comparable(stored) != _comparable(raw_spec):
            raise UserError(f"study '{spec.study}' already exists in this storage with a different spec "
                            f"(choose another --study name, or run the stored one with 'faap sweep resume')")
    return load(spec.study, url)


def _comparable(raw: dict) -> str:
    return json.dumps({k: v for k, v in raw.items() if k not in ("n_trials", "description")}, sort_keys=True,
                      default=str)


def load(name: str, url: str | None) -> StoredStudy:
    """A stored study with its sampler and pruner rebuilt from the stored spec."""
    storage = backend_for(url).open(create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        from faap.errors import did_you_mean

        raise UserError(f"no study '{name}' in {url or 'the embedded storage'}" + did_you_mean(name, names)) from None
    raw = study.user_attrs.get("spec")
    if raw is None:
        raise UserError(f"study '{name}' was not created by faap sweep (no stored spec)")
    spec = parse_spec(raw, f"study '{name}'")
    study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(spec), pruner=make_pruner(spec))
    return StoredStudy(study, spec)


def baseline_studies(stored: StoredStudy, url: str | None) -> list[optuna.Study]:
    storage = backend_for(url).open(create=False)
    name = stored.study.study_name
    return [optuna.load_study(study_name=baseline_study_name(name, b), storage=storage)
            for b in stored.spec.baselines if b != "clean"]
