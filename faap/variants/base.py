"""What a variant is: its config class, its extra modules, and its named loss terms.

The trainer owns G, the detector, the shared terms (``det``, ``wass``) and the G step;
a variant adds what makes it different and says how every term is weighted
(:meth:`Variant.weight_dict`, the one place loss weights live, like DETR's ``weight_dict``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from faap.config import TrainConfig
from faap.detector import DetectorOutput
from faap.evidence import Evidence, Figure
from faap.schedules import beta_at


@dataclass
class StepState:
    """Everything a variant may need about one training step (female rows come first)."""

    out: DetectorOutput
    """Detector output on the perturbed (and augmented) batch."""
    n_female: int
    """Rows ``[:n_female]`` are female, the rest male."""
    epoch: int
    extras: dict = field(default_factory=dict)
    """Hooks from the trainer, e.g. ``recompute_features`` (used only by the legacy bench), ``class_probs``,
    ``matched_scores`` (female, male: each matched query's ground-truth class probability, with its graph; each
    image's mean with ``image_scores``);
    ``loss_terms`` may leave scalars to log under ``extras['logs']``."""
    clean: DetectorOutput | None = None
    """Detector output on the clean (unperturbed, unaugmented) batch, computed without a graph, only for a
    variant with ``needs_clean_outputs`` (None otherwise)."""

    @property
    def female(self) -> slice:
        return slice(0, self.n_female)

    @property
    def male(self) -> slice:
        return slice(self.n_female, None)


@dataclass(frozen=True)
class Finding:
    """What the measurement behind one hypothesis says."""

    verdict: str
    """'supported', 'not supported' or 'inconclusive'."""
    text: str
    """The measured numbers, in words (report.md and report.json)."""
    stats: dict = field(default_factory=dict)
    """Further numbers for report.json."""
    figure: Figure | None = None
    """A figure to show under the verdict, described (the report draws it), or none."""
    where: str = ""
    """What was measured on (images, run), stated after the rule."""


@dataclass(frozen=True)
class Hypothesis:
    """A failure hypothesis a variant declares: a measurement from its saved checkpoints and records,
    a rule, and the verdict the rule gives (``judge``)."""

    key: str
    """Key in report.json (``hypotheses.KEY``)."""
    title: str
    rule: str
    """When the hypothesis counts as supported, stated next to the verdict."""
    judge: Callable[[Evidence], Finding]
    """(evidence) -> Finding: reads only what :class:`faap.evidence.Evidence` offers (comparisons with
    intervals, the clean detector, the best trial's features, per-epoch records) and returns its figure
    described (:class:`faap.evidence.Figure`), never drawn."""


REGISTRY: dict[str, type["Variant"]] = {}
"""Every variant class with a ``name``, registered when its class is defined (see ``faap.variants``)."""


class Variant(nn.Module, abc.ABC):
    """Base class; subclasses set ``name`` (and ``Config`` when they add settings) and implement
    :meth:`loss_terms`. Defining the subclass registers it and names its config class after it."""

    name = ""
    Config = TrainConfig
    original_checkpoint_key = ""
    """Key of the variant's own module in the original code's training checkpoints (recognises them)."""
    label = ""
    """How reports name this variant's baseline condition (default: its name)."""
    reference = "clean"
    """The condition a study of this variant is judged against: a baseline variant's name, or 'clean'
    (also the study's default baselines); 'clean' when the study did not run it."""
    hypotheses: tuple[Hypothesis, ...] = ()
    """Failure hypotheses the study report measures (none: the report says so)."""
    report_sections: tuple = ()
    """Extra study-report sections, each ``(evidence) -> (markdown lines, {report.json key: numbers})``: it
    reads the study's :class:`faap.evidence.Evidence` (as the judges do), never the report's own context."""
    whole_batch = False
    """G and the set loss run once over the whole batch (the single-pass originals), not once per group."""
    needs_clean_outputs = False
    """The step also runs the detector on the clean batch (no grad) and hands it over as ``state.clean``
    (fix10's stability and fix11's L2 anchor); a property may decide per config (no extra forward when off)."""
    group_det_terms = False
    """The detection loss enters G's loss as ``det_f`` and ``det_m`` (each group's set loss over its own boxes),
    weighted apart in :meth:`weight_dict`, instead of one ``det``; with ``whole_batch`` G still runs once."""
    image_scores = False
    """``wass`` and ``matched_score_*`` use each image's mean matched score, not one per matched query;
    the scores (female rows first) reach ``loss_terms`` as ``state.extras['image_scores']``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return
        if "Config" not in cls.__dict__:  # no settings of its own: a config class of its own all the same
            cls.Config = dataclass(type(f"{cls.__name__}Config", (cls.Config,), {"__module__": cls.__module__}))
        owner = cls.Config.__dict__.get("variant_name")
        if owner and owner != cls.name:
            raise TypeError(f"{cls.Config.__name__} already belongs to variant '{owner}'")
        if cls.name in REGISTRY and REGISTRY[cls.name].__qualname__ != cls.__qualname__:
            raise TypeError(f"variant name '{cls.name}' is taken by {REGISTRY[cls.name].__qualname__}")
        cls.Config.variant_name = cls.name
        REGISTRY[cls.name] = cls

    def __init__(self, cfg: TrainConfig, hidden_dim: int):
        super().__init__()
        self.cfg = cfg

    def feature_measurements(self, initial: "Variant", features: dict) -> dict:
        """Measurements of the variant's own modules for the report's diagnostics, merged into them:
        ``initial`` is the variant as initialised, ``self`` as trained; ``features[group][view]`` are
        decoder features (B x Q x D) of views 'clean', 'perturbed', 'view_a', 'view_b'. An ``images`` entry,
        ``{name: {group: tensor with a row per image}}``, is kept per image for the judges' bootstraps
        (``Evidence.image_features``), not reported."""
        return {}

    def g_parameters(self) -> list:
        """Parameters trained by G's optimiser besides G (e.g. a projection head)."""
        return []

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers of the variant's own adversaries (checkpointed with the run)."""
        return {}

    def skips(self, n_female: int, n: int) -> bool:
        """Whether a batch of ``n`` rows with ``n_female`` female ones gets no step at all."""
        return False

    def extra_generator_passes(self) -> int:
        """Train-mode G passes per group that the original made beyond the one of G's step
        (their only lasting effect: BatchNorm running-statistic updates, replayed by the engine)."""
        return 0

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Transform the perturbed images before the detector (training only)."""
        return x

    def after_generator_step(self) -> None:
        """After every step of G's optimiser (a distributed rank that skips its batch steps too), e.g. an EMA
        teacher following a head trained with G (DINO's)."""

    def before_generator_step(self, state: StepState) -> dict[str, float]:
        """Update adversaries on detached features; return logged values."""
        return {}

    @abc.abstractmethod
    def loss_terms(self, state: StepState) -> dict[str, torch.Tensor]:
        """The variant's own named loss terms (unweighted) for G's step."""

    def weight_dict(self, epoch: int) -> dict[str, float]:
        """Weights of every term in G's loss: ``det`` (or ``det_f`` and ``det_m``, both beta until the variant
        weights them apart) and ``wass`` plus the variant's own."""
        cfg = self.cfg
        beta = beta_at(epoch, cfg.beta_start, cfg.beta_final, cfg.epochs)
        det = {"det_f": beta, "det_m": beta} if self.group_det_terms else {"det": beta}
        return {**det, "wass": cfg.lambda_wass}
