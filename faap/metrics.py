"""The one metric registry: every validation metric a run can be selected or optimised on,
with the direction that is better and what it measures.

``faap.config`` (``select_metric``), the trainer's epoch selection, the sweep specs'
objectives and the report's ranking of trials all ask this registry for directions.
"""

from __future__ import annotations

from dataclasses import dataclass

MINIMIZE, MAXIMIZE = "minimize", "maximize"


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str
    """'minimize' or 'maximize' (Optuna's spelling)."""
    description: str

    @property
    def lower_is_better(self) -> bool:
        return self.direction == MINIMIZE

    def best(self, records: list[dict], key=None) -> dict:
        """The record with the best value of this metric (ties: the earliest ``epoch``)."""
        key = key or self.name
        sign = 1 if self.lower_is_better else -1
        return min(records, key=lambda r: (sign * r[key], r["epoch"]))


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("abs_AP_gap", MINIMIZE, "|AP male - AP female| on val"),
    Metric("AP_gap", MINIMIZE, "AP male - AP female on val"),
    Metric("AR_gap", MINIMIZE, "AR male - AR female on val"),
    Metric("AP_mean", MAXIMIZE, "mean of the two groups' AP on val"),
    Metric("AP_female", MAXIMIZE, "AP of the female group on val"),
    Metric("AP_male", MAXIMIZE, "AP of the male group on val"),
    Metric("AR_female", MAXIMIZE, "AR of the female group on val"),
)}
"""name -> :class:`Metric`, in the order shown to users."""


def metric(name: str) -> Metric:
    from faap.errors import ConfigError, did_you_mean

    if name not in METRICS:
        raise ConfigError(f"unknown metric '{name}' (use one of {', '.join(METRICS)})" + did_you_mean(name, METRICS))
    return METRICS[name]
