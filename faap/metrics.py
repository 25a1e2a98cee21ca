"""The one metric registry: every validation metric a run reports, can be selected or optimised
on, with its formula, the direction that is better and what it measures.

Adding a metric is one :class:`Metric` entry in ``METRICS``; everything else asks the registry:
``faap.evaluate.summarize`` computes every entry, ``faap.config`` (``select_metric``) and the
trainer's epoch selection accept every entry, the sweep specs' objectives take their
directions from it and their constraints are the entries flagged ``constraint``.

A metric's ``compute`` receives ``{"male": stats, "female": stats}``, each group's 12 COCO
stats keyed by :data:`STAT_NAMES` (a stat COCO leaves undefined is NaN). It may also receive
numpy arrays in place of the floats (``analysis.bootstrap`` computes its metrics on bootstrap
draws that way), so write it with arithmetic, not ``math``/``if`` on the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MINIMIZE, MAXIMIZE = "minimize", "maximize"
DROP = "_drop"
"""A sweep constraint on metric ``m`` is named ``m + DROP``: the clean detector's value minus the run's."""

STAT_NAMES = (
    "AP@[0.50:0.95]_all_100", "AP@[0.50]_all_100", "AP@[0.75]_all_100", "AP@[0.50:0.95]_small_100",
    "AP@[0.50:0.95]_medium_100", "AP@[0.50:0.95]_large_100", "AR@[0.50:0.95]_all_1", "AR@[0.50:0.95]_all_10",
    "AR@[0.50:0.95]_all_100", "AR@[0.50:0.95]_small_100", "AR@[0.50:0.95]_medium_100",
    "AR@[0.50:0.95]_large_100",
)
"""The 12 COCOeval stats, named as the original codebase's eval JSON (index = stats[i])."""
AP, AR = STAT_NAMES[0], STAT_NAMES[8]
"""The stats the study's AP and AR are: AP@[.50:.95] and AR@100, area all."""


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str
    """'minimize' or 'maximize' (Optuna's spelling)."""
    compute: Callable[[dict], float]
    """``{"male": stats, "female": stats}`` -> the value (see the module docstring)."""
    description: str
    constraint: bool = False
    """A sweep may bound its drop from the clean detector (``<name>_drop``); maximised metrics only."""

    def __post_init__(self):
        if self.direction not in (MINIMIZE, MAXIMIZE):
            raise ValueError(f"metric {self.name}: direction must be {MINIMIZE} or {MAXIMIZE}")
        if self.constraint and self.direction != MAXIMIZE:
            raise ValueError(f"metric {self.name}: only a maximised metric can drop from the clean detector's value")

    @property
    def lower_is_better(self) -> bool:
        return self.direction == MINIMIZE

    def best(self, records: list[dict]) -> dict:
        """The record with the best value of this metric (ties: the earliest ``epoch``)."""
        sign = 1 if self.lower_is_better else -1
        return min(records, key=lambda r: (sign * r[self.name], r["epoch"]))


def _of(group: str, stat: str) -> Callable[[dict], float]:
    return lambda result: result[group][stat]


def _gap(stat: str) -> Callable[[dict], float]:
    return lambda result: result["male"][stat] - result["female"][stat]


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("abs_AP_gap", MINIMIZE, lambda r: abs(r["male"][AP] - r["female"][AP]), "|AP male - AP female| on val"),
    Metric("AP_gap", MINIMIZE, _gap(AP), "AP male - AP female on val"),
    Metric("AR_gap", MINIMIZE, _gap(AR), "AR male - AR female on val"),
    Metric("AP_mean", MAXIMIZE, lambda r: (r["male"][AP] + r["female"][AP]) / 2, "mean of the two groups' AP on val",
           constraint=True),
    Metric("AP_female", MAXIMIZE, _of("female", AP), "AP of the female group on val", constraint=True),
    Metric("AP_male", MAXIMIZE, _of("male", AP), "AP of the male group on val", constraint=True),
    Metric("AR_female", MAXIMIZE, _of("female", AR), "AR of the female group on val"),
    Metric("AR_male", MAXIMIZE, _of("male", AR), "AR of the male group on val"),
)}
"""name -> :class:`Metric`, in the order shown to users. Read it when used, not at import: a test may add one."""


def metric(name: str) -> Metric:
    from faap.errors import ConfigError, did_you_mean

    if name not in METRICS:
        raise ConfigError(f"unknown metric '{name}' (use one of {', '.join(METRICS)})" + did_you_mean(name, METRICS))
    return METRICS[name]


def constraints() -> dict[str, Metric]:
    """Sweep constraint name (``AP_mean_drop``) -> the metric whose drop it bounds, for every flagged metric."""
    return {m.name + DROP: m for m in METRICS.values() if m.constraint}
