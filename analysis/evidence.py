"""The evidence a study offers its variant's hypothesis judges: :class:`faap.evidence.Evidence`
built from the study's loaded data, the report's bootstrap results and a feature measurement.

Judges see only the typed interface; the bootstrap's dict layout (``analysis.bootstrap.bootstrap_gap``)
and the per-epoch frame's filtering stay here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.diagnostics import loss_vs_gap_points
from faap.evidence import Best, Difference, Estimate

EPOCH_COLUMNS = ("condition", "trial", "seed", "run", "epoch", "split", "metric", "value")
"""Columns of the per-epoch records (``analysis.study.StudyData.epochs``), also of an empty selection."""


@dataclass
class StudyEvidence:
    """:class:`faap.evidence.Evidence` of one study (see there for what each member means)."""

    epochs: pd.DataFrame
    best: Best
    reference: str = "clean"
    conditions: tuple[str, ...] = ()
    splits: dict = field(default_factory=dict)
    """split -> the report's :func:`analysis.bootstrap.bootstrap_gap` result."""
    clean: dict = field(default_factory=dict)
    """split -> the clean detector's stored metrics (``StudyData.clean``)."""
    measure_features: Callable[[], dict] | None = None
    """Computes :meth:`features` (called at most once; its ``images`` attribute, as
    :class:`analysis.diagnostics.FeatureDiagnostics` has, gives :meth:`image_features`); None: this
    evidence has no checkpoint to measure."""
    _features: dict | None = field(default=None, init=False, repr=False)

    def _entry(self, split: str, kind: str, key: str, metric: str) -> dict:
        found = self.splits.get(split, {}).get(kind, {})
        if key not in found:
            raise KeyError(f"no {split} {kind[:-1]} '{key}' in the study's comparisons (has: {', '.join(found)})")
        return found[key][metric]

    def difference(self, split: str, a: str, b: str, metric: str = "AP_gap") -> Difference:
        d = self._entry(split, "differences", f"{a} - {b}", metric)
        return Difference(d["value"], tuple(d["ci"]), d["half_width"], d["p_two_sided"], tuple(d["runs"]))

    def condition(self, split: str, name: str, metric: str = "AP_gap") -> Estimate:
        c = self._entry(split, "conditions", name, metric)
        return Estimate(c["value"], tuple(c["ci"]))

    def clean_gap(self, split: str, metric: str = "AP_gap") -> float | None:
        return self.clean.get(split, {}).get(metric)

    def features(self) -> dict:
        if self._features is None:
            if self.measure_features is None:
                raise RuntimeError("this evidence has no checkpoint to measure features on")
            self._features = self.measure_features()
        return self._features

    def image_features(self) -> dict:
        images = getattr(self.features(), "images", None)
        if images is None:
            raise RuntimeError("this evidence's feature measurement kept no per-image features")
        return images

    def _trials(self) -> pd.DataFrame:
        if "condition" not in self.epochs:  # no record at all: a frame without columns
            return pd.DataFrame(columns=list(EPOCH_COLUMNS))
        return self.epochs[self.epochs["condition"].str.startswith("trial")]

    def trial_epochs(self, metric: str) -> pd.DataFrame:
        rows = self._trials()
        return rows[rows["metric"] == metric].sort_values(["run", "epoch"])

    def per_run(self, metric: str) -> dict[str, np.ndarray]:
        return {run: g["value"].to_numpy() for run, g in self.trial_epochs(metric).groupby("run")}

    def loss_vs_gap_points(self, loss: str) -> np.ndarray:
        return loss_vs_gap_points(self._trials(), loss, self.clean_gap("val") or 0.0)


def study_evidence(data, best, reference: str, compared: list[str], splits: dict,
                   features: Callable[[], dict]) -> StudyEvidence:
    """The evidence of a loaded study (``analysis.study.StudyData``) whose best trial is the condition
    ``best``; ``splits``: split -> bootstrap result over ``compared``; ``features``: the measurement of the
    best trial's first seed run (e.g. a cached :func:`analysis.diagnostics.feature_diagnostics`)."""
    return StudyEvidence(data.epochs, Best(best.name, dict(best.params), tuple(best.runs)), reference,
                         tuple(compared), splits, data.clean, features)
