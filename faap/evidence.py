"""What a variant's hypothesis judge may ask about a finished study, and the figure it may hand back.

A judge (``Hypothesis.judge``) receives an :class:`Evidence` and returns a ``Finding``; it never reads a
report's files or dicts and never draws: a :class:`Figure` says what to draw and the report draws it.
The study report builds the one implementation (``analysis.evidence.StudyEvidence``); a test may build
its own object with the few members its judge uses.

Conventions: ``split`` is 'val' or 'test'; a condition is 'clean' (the unperturbed detector), a baseline
variant's name (e.g. 'adversarial') or a trial ('trial 3'); metrics are ``AP_gap``, ``AR_gap`` (male minus
female) or ``AP_male``, ``AP_female``, ``AR_male``, ``AR_female``, fractions in [0, 1]. A condition's value
is the mean over its seed runs; intervals are the study report's 95% hierarchical bootstrap (images and
seeds resampled, the same image draw for every condition, so differences are paired).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FIGURE_KINDS = ("bars", "scatter")


@dataclass(frozen=True)
class Estimate:
    """One condition's value of one metric on one split, with its interval."""

    value: float
    ci: tuple[float, float]


@dataclass(frozen=True)
class Difference:
    """Condition a minus condition b, one metric on one split (paired: the same image draws)."""

    value: float
    ci: tuple[float, float]
    half_width: float
    """Half the interval's width: the smallest difference this comparison could detect."""
    p: float
    """Two-sided bootstrap p-value of 'no difference' (ties count half)."""
    runs: tuple[int, int]
    """Seed runs behind a and b."""


@dataclass(frozen=True)
class Best:
    """The study's best trial (by its validation objective)."""

    name: str
    """Condition name, e.g. 'trial 3'."""
    params: dict
    runs: tuple[str, ...]
    """Its run folders, one per seed; ``features()`` measures the first."""


@dataclass(frozen=True)
class Figure:
    """A figure described, not drawn: the report draws it under the verdict (``figures/<name>``).

    - ``kind='bars'``: ``data`` is ``{series: {category: value}}`` (grouped bars; every series has the
      same categories); ``ylabel`` labels the values.
    - ``kind='scatter'``: ``data`` is an array whose first two columns are x and y (further columns,
      e.g. run codes, are ignored); a line marks y = 0.
    """

    kind: str
    data: object
    name: str
    """File name (PNG), unique within one report."""
    ylabel: str
    xlabel: str = ""
    title: str = ""

    def __post_init__(self):
        if self.kind not in FIGURE_KINDS:
            raise ValueError(f"figure kind '{self.kind}' is not one of {FIGURE_KINDS}")


class Evidence(Protocol):
    """What a hypothesis judge may read about a study: its comparisons, the clean detector, the best
    trial's features and every run's per-epoch records."""

    best: Best
    reference: str
    """The condition the study's variant is judged against (its declared baseline, or 'clean')."""
    conditions: tuple[str, ...]
    """Every compared condition: 'clean', the reference when the study ran it, then each trial."""

    def difference(self, split: str, a: str, b: str, metric: str = "AP_gap") -> Difference:
        """Condition ``a`` minus ``b`` (both in :attr:`conditions`)."""

    def condition(self, split: str, name: str, metric: str = "AP_gap") -> Estimate:
        """One condition's value with its interval."""

    def clean_gap(self, split: str, metric: str = "AP_gap") -> float | None:
        """The clean detector's value as its stored evaluation gives it (no interval), or None when the
        study stored none for that split. Trap: on test it equals ``condition(split, 'clean').value`` only
        up to rounding; a rule that compares with the bootstrap's numbers should use :meth:`condition`."""

    def features(self) -> dict:
        """Feature diagnostics of the best trial's first seed run at its selected epoch, computed on first
        call (slow: runs the detector). Keys: ``run``, ``epoch``, ``n_images`` ({group: n}),
        ``h1_features_before/views/after`` (``faap.measures.cosine_summary`` of pooled decoder features),
        ``h3`` (effective rank and per-dimension variance before/after, ``feature_dim``), ``feature_shift``
        ({group: relative change under the perturbation}), plus the variant's ``feature_measurements``."""

    def image_features(self) -> "dict[str, dict[str, np.ndarray]]":
        """The per-image arrays behind :meth:`features` (same run, epoch and images), for bootstrapping over
        images: ``{group: {name: array (n_images x dim)}}``, rows in one image order per group; names 'clean',
        'perturbed', 'view_a', 'view_b' (pooled decoder features) plus the variant's own per-image measures
        (e.g. InfoNCE's 'projection_before', 'projection_after')."""

    @property
    def epochs(self) -> "pd.DataFrame":
        """Per-epoch validation records of every run: columns condition, trial, seed, run, epoch, split,
        metric, value (one row per logged number)."""

    def trial_epochs(self, metric: str) -> "pd.DataFrame":
        """The trials' rows of :attr:`epochs` for ``metric``, sorted by run and epoch (baselines left out)."""

    def per_run(self, metric: str) -> "dict[str, np.ndarray]":
        """Each trial run's values of ``metric`` in epoch order (run folder -> array)."""

    def loss_vs_gap_points(self, loss: str) -> "np.ndarray":
        """Trial runs' (drop of ``loss`` since epoch 0, val AP gap minus the clean detector's, run code) per
        (run, epoch >= 1); the run codes let ``faap.measures.rank_correlation`` resample whole runs."""
