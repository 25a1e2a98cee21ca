"""Study specs (``sweeps/*.yaml``): read, validate, expand. Nothing touches a storage here.

A spec::

    study: temperature                  # study name (storage key, run folder name)
    variant: infonce                    # the variant under study
    data: synthetic                     # 'synthetic' (the built-in benchmark, written if missing) or a root
    detector: demo
    base_config: synthetic              # optional config file or built-in name
    fixed: {epochs: 6}                  # overrides for every trial
    search_space:
      temperature: {type: float, low: 0.02, high: 0.5, log: true}
      aug_strength: {type: categorical, choices: [none, medium]}
      proj_dim: {type: int, low: 32, high: 256, step: 32}
      lambda_infonce: {type: categorical, choices: [0.5, 1.0, 2.0]}   # type grid needs sampler grid   # sampler grid: every param is a grid
    sampler: tpe                        # grid, random, tpe, nsga2, auto
    objectives: [{metric: AP_gap, direction: minimize}]   # a second one (AP_mean, maximize) needs pruner none
    constraints: [{metric: AP_mean_drop, max: 0.02}]   # feasible when metric <= max (faap.metrics.constraints)
    pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}   # median, hyperband, wilcoxon, none
    n_trials: 20
    seeds: [42, 43, 44]                 # each trial's value is the mean over its seeds
    reference_seeds: [42, 43, 44, 45, 46]   # the baseline variants' seeds (default: seeds); the reference every
                                        # verdict stands on can have more seeds than each trial
    baselines: [adversarial, clean]     # run first, with their defaults (default: the variant's reference, clean)
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field

import yaml

from faap.config import read_config_file
from faap.errors import UserError, did_you_mean
from faap.metrics import MAXIMIZE, METRICS, MINIMIZE, constraints as constraint_metrics
from faap.variants import VARIANTS, config_class, make_config

SAMPLERS = ("grid", "random", "tpe", "nsga2", "auto")
PRUNERS = ("median", "hyperband", "wilcoxon", "none")
PARAM_TYPES = ("float", "int", "categorical", "grid")
KEYS = ("study", "variant", "data", "detector", "base_config", "fixed", "search_space", "sampler", "objectives",
        "constraints", "pruner", "n_trials", "seeds", "reference_seeds", "baselines", "description")


class SpecError(UserError):
    """A study spec that cannot be run."""


@dataclass
class Param:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)

    def grid_values(self) -> list | None:
        if self.type in ("grid", "categorical"):
            return list(self.choices)
        return None


@dataclass
class StudySpec:
    study: str
    variant: str
    data: str
    detector: str
    base: dict
    fixed: dict
    params: list[Param]
    sampler: str
    objectives: list[dict]
    constraints: list[dict]
    pruner: dict
    n_trials: int
    seeds: list[int]
    baselines: list[str]
    source: str = ""
    description: str = ""
    reference_seeds: list[int] = field(default_factory=list)
    """Seeds of the baseline variants' runs (the spec's ``seeds`` when it does not say)."""

    def seeds_of(self, baseline: bool) -> list[int]:
        """The seeds one trial of the study (``baseline`` False) or of a baseline variant runs."""
        return self.reference_seeds if baseline else self.seeds

    @property
    def directions(self) -> list[str]:
        return [o["direction"] for o in self.objectives]

    def grid(self) -> list[dict]:
        """Every grid point (sampler grid), in a fixed order."""
        names = [p.name for p in self.params]
        return [dict(zip(names, values)) for values in itertools.product(*(p.grid_values() for p in self.params))]

    def trial_values(self, params: dict, seed: int) -> dict:
        """The flat config values of one run of a trial."""
        return {**self.base, **self.fixed, **params, "data": self.data, "detector": self.detector, "seed": seed}

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _fail(source: str, message: str):
    raise SpecError(f"{source}: {message}")


def _param(source: str, name: str, raw, variant: str) -> Param:
    cls = config_class(variant)
    known = [f for f in cls.__dataclass_fields__ if f not in ("variant", "data", "detector", "seed")]
    if name not in known:
        _fail(source, f"unknown parameter '{name}' for variant '{variant}'" + did_you_mean(name, known))
    if not isinstance(raw, dict) or raw.get("type") not in PARAM_TYPES:
        _fail(source, f"parameter '{name}' needs type: one of {', '.join(PARAM_TYPES)}")
    extra = set(raw) - {"type", "low", "high", "log", "step", "choices", "values"}
    if extra:
        _fail(source, f"parameter '{name}': unknown field '{sorted(extra)[0]}'")
    t = raw["type"]
    if t in ("float", "int"):
        low, high = raw.get("low"), raw.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
            _fail(source, f"parameter '{name}': needs numeric low < high (got low={low}, high={high})")
        if raw.get("log") and low <= 0:
            _fail(source, f"parameter '{name}': a log range needs low > 0 (got {low})")
        if raw.get("log") and raw.get("step") is not None:
            _fail(source, f"parameter '{name}': Optuna cannot combine log with step")
        if t == "int" and not (float(low).is_integer() and float(high).is_integer()):
            _fail(source, f"parameter '{name}': int range needs integer bounds")
        p = Param(name, t, low, high, bool(raw.get("log", False)), raw.get("step"))
    else:
        values = raw.get("choices", raw.get("values"))
        if not isinstance(values, list) or not values:
            _fail(source, f"parameter '{name}': needs a non-empty list of {'choices' if t == 'categorical' else 'values'}")
        p = Param(name, t, choices=values)
    # Every value must make a valid config: check the range ends / each choice now.
    for value in ([p.low, p.high] if p.type in ("float", "int") else p.choices):
        try:
            make_config(variant, {name: int(value) if p.type == "int" else value})
        except UserError as e:
            _fail(source, f"parameter '{name}' value {value!r}: {e}")
    return p


def load_spec(path: str) -> StudySpec:
    """Read and validate a spec; every problem is a one-line SpecError naming the file."""
    if not os.path.isfile(path):
        raise SpecError(f"spec not found: {path}")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_spec(raw, path)


def _check_header(raw, source: str) -> tuple[str, str]:
    """The mapping's keys, the study name and the variant."""
    if not isinstance(raw, dict):
        _fail(source, "a spec is a mapping of key: value")
    for key in raw:
        if key not in KEYS:
            _fail(source, f"unknown key '{key}'" + did_you_mean(key, KEYS))
    for key in ("study", "variant", "search_space", "objectives", "n_trials"):
        if key not in raw:
            _fail(source, f"missing key '{key}'")
    study = str(raw["study"])
    if not study.replace("-", "").replace("_", "").replace(".", "").isalnum():
        _fail(source, f"study name '{study}' may hold letters, digits, '-', '_' and '.' only")
    variant = raw["variant"]
    if variant not in VARIANTS:
        _fail(source, f"unknown variant '{variant}'" + did_you_mean(str(variant), VARIANTS))
    return study, variant


def _check_config_and_space(raw, source: str, variant: str) -> tuple[dict, dict, list]:
    """The base config, the fixed values (valid for the variant) and the searched parameters."""
    base = read_config_file(raw["base_config"]) if raw.get("base_config") else {}
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        _fail(source, "fixed must be a mapping of config key: value")
    try:
        make_config(variant, {**base, **fixed})
    except UserError as e:
        _fail(source, f"fixed: {e}")
    space = raw["search_space"]
    if not isinstance(space, dict) or not space:
        _fail(source, "search_space must map parameter names to ranges")
    params = [_param(source, name, spec, variant) for name, spec in space.items()]
    clash = [p.name for p in params if p.name in fixed]
    if clash:
        _fail(source, f"parameter '{clash[0]}' is both fixed and searched")
    return base, fixed, params


def _check_objectives(raw, source: str) -> tuple[list, list]:
    """One or two objectives (directions from the metric registry) and the constraints (its flagged metrics)."""
    objectives = raw["objectives"]
    if not isinstance(objectives, list) or not 1 <= len(objectives) <= 2:
        _fail(source, "objectives must be a list of one or two {metric, direction}")
    for o in objectives:
        if not isinstance(o, dict) or o.get("metric") not in METRICS:
            _fail(source, f"unknown objective metric {o.get('metric') if isinstance(o, dict) else o!r} "
                          f"(use one of {', '.join(METRICS)})")
        o.setdefault("direction", METRICS[o["metric"]].direction)
        if o["direction"] not in (MINIMIZE, MAXIMIZE):
            _fail(source, f"objective direction must be minimize or maximize (got {o['direction']!r})")
    constraints, allowed = raw.get("constraints") or [], constraint_metrics()
    for c in constraints:
        if not isinstance(c, dict) or c.get("metric") not in allowed or not isinstance(c.get("max"), (int, float)):
            _fail(source, f"a constraint is {{metric: one of {', '.join(allowed)}, max: number}}")
    return objectives, constraints


def _check_budget(raw, source: str, variant: str, n_objectives: int) -> tuple[str, dict, int, list, list]:
    """Sampler, pruner, trial budget, seeds and baselines."""
    sampler = raw.get("sampler", "auto")
    if sampler not in SAMPLERS:
        _fail(source, f"unknown sampler '{sampler}' (use one of {', '.join(SAMPLERS)})" + did_you_mean(str(sampler), SAMPLERS))
    pruner = raw.get("pruner") or {"type": "none"}
    if isinstance(pruner, str):
        pruner = {"type": pruner}
    if pruner.get("type") not in PRUNERS:
        _fail(source, f"unknown pruner '{pruner.get('type')}' (use one of {', '.join(PRUNERS)})"
              + did_you_mean(str(pruner.get("type")), PRUNERS))
    if n_objectives > 1 and pruner["type"] != "none":
        _fail(source, "Optuna cannot prune multi-objective studies: use pruner: none")
    n_trials = raw["n_trials"]
    if not isinstance(n_trials, int) or n_trials < 1:
        _fail(source, f"n_trials must be a positive int (got {n_trials!r})")
    seeds = _check_seeds(raw.get("seeds", [42]), source, "seeds")
    baselines = raw.get("baselines", list(dict.fromkeys([VARIANTS[variant].reference, "clean"]))) or []
    for b in baselines:
        if b != "clean" and b not in VARIANTS:
            _fail(source, f"unknown baseline '{b}' (use 'clean' or a variant: {', '.join(VARIANTS)})")
    return sampler, pruner, n_trials, seeds, baselines


def _check_seeds(seeds, source: str, key: str) -> list[int]:
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        _fail(source, f"{key} must be a non-empty list of distinct ints")
    return seeds


def _reference_seeds(raw, source: str, seeds: list[int], baselines: list[str]) -> list[int]:
    """The baseline variants' seeds: the trials' unless the spec gives its own (for a variant baseline)."""
    if "reference_seeds" not in raw:
        return list(seeds)
    if not any(b != "clean" for b in baselines):
        _fail(source, "reference_seeds needs a baseline variant to run them (the clean detector has no seeds)")
    return _check_seeds(raw["reference_seeds"], source, "reference_seeds")


def _resolve_sampler(spec: "StudySpec") -> None:
    """'auto' -> grid / NSGA-II / TPE; a grid must be listed and fit the trial budget."""
    params, source = spec.params, spec.source
    if spec.sampler == "auto":
        spec.sampler = ("grid" if all(p.type == "grid" for p in params)
                        else "nsga2" if len(spec.objectives) > 1 else "tpe")
    if spec.sampler == "grid":
        bad = [p.name for p in params if p.grid_values() is None]
        if bad:
            _fail(source, f"sampler grid needs listed values; parameter '{bad[0]}' is a {params[0].type} range")
        size = math.prod(len(p.grid_values()) for p in params)
        if size > spec.n_trials:
            _fail(source, f"the grid has {size} points but n_trials is {spec.n_trials}: raise n_trials or shrink the grid")
    elif any(p.type == "grid" for p in params):
        _fail(source, f"type grid needs sampler grid (sampler is {spec.sampler}); use categorical")


def parse_spec(raw, source: str = "<spec>") -> StudySpec:
    """A validated study spec; the first problem ends in one line (SpecError, exit status 2)."""
    study, variant = _check_header(raw, source)
    base, fixed, params = _check_config_and_space(raw, source, variant)
    objectives, constraints = _check_objectives(raw, source)
    sampler, pruner, n_trials, seeds, baselines = _check_budget(raw, source, variant, len(objectives))
    spec = StudySpec(study, variant, str(raw.get("data", "synthetic")), str(raw.get("detector", "demo")), base,
                     fixed, params, sampler, objectives, constraints, pruner, n_trials, seeds, baselines, source,
                     str(raw.get("description", "")), _reference_seeds(raw, source, seeds, baselines))
    _resolve_sampler(spec)
    return spec
