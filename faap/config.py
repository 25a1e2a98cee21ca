"""One config mechanism: a dataclass per variant (subclassing :class:`TrainConfig`), filled from
defaults <- a YAML file <- ``--set key=value`` overrides, validated with one-line errors.

Each field has a one-line docstring under it. A variant's config class adds its own
hyperparameters and may change shared defaults (e.g. its optimiser).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import yaml

from faap.errors import ConfigError, did_you_mean
from faap.metrics import METRICS

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
PROVENANCE_KEYS = ("dataset_fingerprint", "detector_id", "code_commit", "torch", "threads", "world_size",
                   "skipped_bad_images")
"""What a run's ``config.yaml`` records beside its config values (:class:`faap.trainer.Run` writes them);
``faap train --config RUN/config.yaml`` reads them as checks, not as values."""
DATASET_CONFIG = "faap_config.yaml"
"""Config values a dataset folder carries (written by ``faap data synth``), applied beneath the user's."""


def bounded(default=dataclasses.MISSING, *, gt=None, ge=None, le=None, choices=None,
            default_factory=dataclasses.MISSING):
    """A config field with its bounds declared on it (checked by :func:`check_bounds`)::

        lambda_wass: float = bounded(0.2, ge=0)
        optimizer: str = bounded("adam", choices=("adam", "adamw"))
    """
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("le", le), ("choices", choices)) if v is not None}
    return field(default=default, default_factory=default_factory, metadata={"bounds": bounds})


def _bound_error(name: str, value, bounds: dict) -> str | None:
    """The one-line complaint about ``value`` breaking ``bounds``, or None."""
    if "choices" in bounds:
        options = tuple(bounds["choices"])
        if value not in options:
            return (f"{name} must be one of {', '.join(options)} (got {value!r})" + did_you_mean(str(value), options))
        return None
    if "ge" in bounds and "le" in bounds and not bounds["ge"] <= value <= bounds["le"]:
        return f"{name} must be in [{bounds['ge']}, {bounds['le']}] (got {value})"
    for key, op, ok in (("gt", ">", lambda a, b: a > b), ("ge", ">=", lambda a, b: a >= b),
                        ("le", "<=", lambda a, b: a <= b)):
        if key in bounds and not ok(value, bounds[key]):
            return f"{name} must be {op} {bounds[key]} (got {value})"
    return None


def bounds_of(cls, name: str) -> dict:
    """The bounds declared on field ``name`` of config class ``cls`` or, when a subclass only changes
    its default (``optimizer: str = "adamw"``), of the nearest base class that declares them."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "bounds" in f.metadata:
            return dict(f.metadata["bounds"])
    return {}


def check_bounds(cfg) -> None:
    """Raise ConfigError naming the first field of ``cfg`` whose value breaks its declared bounds."""
    for f in dataclasses.fields(cfg):
        message = _bound_error(f.name, getattr(cfg, f.name), bounds_of(type(cfg), f.name))
        if message:
            raise ConfigError(message)


@dataclass
class TrainConfig:
    """Settings shared by every variant."""

    variant_name = ""
    """Set from the owning :class:`faap.variants.base.Variant`'s ``name`` when the variant is defined."""

    variant: str = ""
    """Registered variant name (set from the variant's config class)."""
    data: str = ""
    """Dataset root (original gender-split layout or {split}.json files)."""
    detector: str = "demo"
    """Detector spec: 'demo', a transformers folder or hub id, or an original DETR .pth."""
    aux_loss: bool = True
    """Set loss over the last and all auxiliary decoder layers, as the original (False: last layer only)."""
    seed: int = 42
    """Seed of every random draw (init, sampling, augmentation)."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu', 'cuda', 'cuda:N'."""
    epochs: int = bounded(24, gt=0)
    """Training epochs."""
    batch_size: int = bounded(4, gt=0)
    """Images per step over both groups."""
    optimizer: str = bounded("adam", choices=("adam", "adamw"))
    """Optimiser of G (and any head trained with it): 'adam' or 'adamw'."""
    lr_g: float = bounded(1e-4, gt=0)
    """Learning rate of G."""
    weight_decay: float = bounded(0.0, ge=0)
    """Weight decay of G's optimiser."""
    grad_clip: float = bounded(0.1, ge=0)
    """Gradient-norm clip of G's step (0 disables)."""
    lr_schedule: str = bounded("constant", choices=("constant", "cosine", "warmup_cosine"))
    """G's learning-rate schedule: 'constant', 'cosine' (CosineAnnealingLR), 'warmup_cosine' (warm-up, cosine)."""
    lr_step_every: str = bounded("epoch", choices=("epoch", "step"))
    """When the schedule advances: after each 'epoch' (as the originals) or each training 'step' (batch)."""
    lr_warmup_epochs: int = bounded(0, ge=0)
    """Epochs of warmup_cosine's linear warm-up (lr x (k+1)/N in warm-up epoch k); ignored by the others."""
    lr_min_ratio: float = bounded(0.1, ge=0, le=1)
    """The cosine's floor as a fraction of lr_g (both originals: 0.1)."""
    ema_decay: float = bounded(0.0, ge=0, le=0.99999)
    """Decay of an EMA of G's (and the variant's G-side) parameters, the weights evaluated (0: off; orig. 0.999)."""
    eps_start: float = bounded(0.05, gt=0)
    """Perturbation budget at epoch 0 (ImageNet-normalised pixel units)."""
    eps_peak: float = bounded(0.10, gt=0)
    """Budget reached at the end of the warm-up and held."""
    eps_final: float = bounded(0.09, gt=0)
    """Budget at the end of the cool-down."""
    eps_warmup_epochs: int = bounded(8, ge=0)
    """Epochs of linear warm-up (epochs 0..N-1)."""
    eps_hold_epochs: int = bounded(6, ge=0)
    """Epochs at the peak budget."""
    eps_cooldown_epochs: int = bounded(10, ge=0)
    """Epochs of linear cool-down to eps_final."""
    beta_start: float = bounded(0.5, ge=0)
    """Weight of the detection loss at epoch 0."""
    beta_final: float = bounded(0.6, ge=0)
    """Weight of the detection loss at the last epoch."""
    lambda_wass: float = bounded(0.2, ge=0)
    """Weight of the one-way Wasserstein matched-score loss."""
    score_top_k: int = bounded(10, ge=0)
    """Queries behind an image-level score (the mean of its k highest query scores; 0: all): the logged
    ``train_score_f/m/gap`` and the fix10/fix11 variants' score weights (the originals' --score_top_k)."""
    obj_conf_thresh: float = bounded(0.5, ge=0, le=1)
    """Objectness threshold of the 'obj_frac' diagnostic."""
    max_train_per_gender: int = bounded(0, ge=0)
    """Cap on each group's training pool (0: all images)."""
    epoch_samples: int = bounded(0, ge=0)
    """Samples per epoch (0: the sampler's own length; 'balanced': 2 x max(n_female, n_male), as the original)."""
    sampler: str = bounded("balanced", choices=("balanced", "natural", "fresh_subset"))
    """Training sampler: 'balanced' (groups 1:1), 'natural' (their ratio), 'fresh_subset' (new subsets per epoch)."""
    eval_max_images: int = bounded(0, ge=0)
    """Validation images per group used each epoch (0: all); test always uses all."""
    train_scales: list = field(default_factory=lambda: list(range(480, 801, 32)))
    """Shorter-side sizes drawn in training (DETR multi-scale)."""
    max_size: int = bounded(1333, gt=0)
    """Longest side after resizing."""
    eval_size: int = bounded(800, gt=0)
    """Shorter side at evaluation."""
    random_crop: bool = True
    """DETR's random-size crop branch in training."""
    num_workers: int = bounded(-1, ge=-1)
    """DataLoader worker processes; -1: from the machine (on CUDA the cores per GPU less one, at most 8; none
    on the CPU, where workers compete with the compute threads)."""
    tf32: bool = True
    """TF32 matmuls and convolutions on CUDA (the originals ran with it on; ignored on the CPU)."""
    select_metric: str = bounded("abs_AP_gap", choices=METRICS.keys())  # a live view: a metric added later counts
    """Validation metric that picks the epoch tested (gaps minimised, APs maximised; see faap.metrics)."""
    keep_checkpoints: str = bounded("all", choices=("all", "last"))
    """'all' epochs' checkpoints, or 'last' and the best so far only."""
    amp: str = bounded("none", choices=("none", "bf16"))
    """Autocast dtype on CUDA: 'none' or 'bf16'."""
    channels_last: bool = False
    """Run G's convolutions in channels_last (NHWC) memory format (measure with faap bench)."""
    g_checkpointing: bool = False
    """Activation checkpointing of G's blocks in training: less memory, about one more forward of G per step."""
    perturb_padding: bool = True
    """Perturb the padded pixels of a batch too, in training and evaluation (as the original); False masks them."""
    skip_bad_images: bool = False
    """Leave out (and count) images that cannot be decoded instead of stopping before training."""

    # ---- validation ------------------------------------------------------------------
    def check(self) -> None:
        """Raise ConfigError on values that cannot work (bounds are declared on the fields; a variant's
        config overrides this only for checks that span several fields)."""
        check_bounds(self)  # every field's declared bounds
        if self.sampler == "fresh_subset" and not self.max_train_per_gender:
            raise ConfigError("sampler fresh_subset draws max_train_per_gender images per group each epoch: set it > 0")
        if not self.train_scales or any(not isinstance(s, int) or s <= 0 for s in self.train_scales):
            raise ConfigError(f"train_scales must be a non-empty list of positive ints (got {self.train_scales})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _coerce(cls, key: str, value: Any) -> Any:
    """Check ``value``'s type against the field's annotation (YAML already parsed it)."""
    hint = get_type_hints(cls)[key]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is list and isinstance(value, (list, tuple)):
        return list(value)
    if hint in (int, float, str, bool, list) and not (isinstance(value, hint) and not
                                                       (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{key} must be {hint.__name__} (got {value!r}, a {type(value).__name__})")
    return value


def parse_set(items: list[str]) -> dict:
    """``["a=1", "b=[1,2]"]`` -> ``{"a": 1, "b": [1, 2]}`` (values parsed as YAML)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value (got '{item}')")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value '{raw}'") from None
    return out


def read_config_file(path: str) -> dict:
    """A YAML mapping; a bare name (``synthetic``) means ``faap/configs/NAME.yaml``."""
    if not os.path.isfile(path) and os.path.isfile(os.path.join(CONFIG_DIR, f"{path}.yaml")):
        path = os.path.join(CONFIG_DIR, f"{path}.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value")
    return data


def dataset_settings(root: str) -> dict:
    """The config values a dataset folder carries (``ROOT/faap_config.yaml``), or none."""
    path = os.path.join(os.path.expanduser(root), DATASET_CONFIG)
    return read_config_file(path) if os.path.isfile(path) else {}


def build_config(cls, values: dict, other_variants: dict | None = None):
    """An instance of ``cls`` from ``values``; unknown keys name the closest known key."""
    known = field_names(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            owner = [n for n, c in (other_variants or {}).items() if key in field_names(c)]
            where = f" (it belongs to variant '{owner[0]}')" if owner else did_you_mean(key, known)
            raise ConfigError(f"unknown config key '{key}' for variant '{cls.variant_name}'{where}")
        kwargs[key] = _coerce(cls, key, value)
    kwargs["variant"] = cls.variant_name
    cfg = cls(**kwargs)
    cfg.check()
    return cfg


def code_commit() -> str:
    """The git commit of this code (``-dirty`` with uncommitted changes), or 'unknown'."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
