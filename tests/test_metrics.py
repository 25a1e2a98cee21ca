"""The metric registry: one Metric entry per metric; summarize, epoch selection, config and spec
validation and sweep constraints all derive from it."""

import math
from types import SimpleNamespace

import pytest

from ablations.objective import constraint_values
from ablations.spec import SpecError, parse_spec
from faap.errors import ConfigError
from faap.evaluate import summarize
from faap.metrics import AP, AR, MAXIMIZE, METRICS, MINIMIZE, STAT_NAMES, Metric, constraints
from faap.trainer import Run
from faap.variants import make_config

AP50 = STAT_NAMES[1]
SPACE = {"temperature": {"type": "float", "low": 0.05, "high": 0.5}}


def _result(male: dict, female: dict) -> dict:
    """Per-group COCO stats: every stat distinct (so a formula reading the wrong one shows), some overridden."""
    return {"male": {**{s: 0.5 + i / 100 for i, s in enumerate(STAT_NAMES)}, **male},
            "female": {**{s: 0.3 + i / 100 for i, s in enumerate(STAT_NAMES)}, **female}}


@pytest.mark.parametrize("name", list(METRICS))
def test_every_registered_metric_is_summarized(name):
    result = _result({}, {})
    value = summarize(result)[name]
    assert isinstance(value, float) and math.isfinite(value) and value == METRICS[name].compute(result)


def test_builtin_formulas():
    assert summarize(_result({AP: 0.4, AR: 0.7}, {AP: 0.6, AR: 0.9})) == pytest.approx({
        "abs_AP_gap": 0.2, "AP_gap": -0.2, "AR_gap": -0.2, "AP_mean": 0.5, "AP_female": 0.6, "AP_male": 0.4,
        "AR_female": 0.9, "AR_male": 0.7})


def test_constraints_are_the_flagged_metrics():
    assert list(constraints()) == ["AP_mean_drop", "AP_female_drop", "AP_male_drop"]
    assert all(m.direction == MAXIMIZE for m in constraints().values())
    with pytest.raises(ValueError, match="only a maximised metric"):
        Metric("x_gap", MINIMIZE, lambda r: 0.0, "a gap", constraint=True)
    with pytest.raises(ValueError, match="direction must be"):
        Metric("x", "lower", lambda r: 0.0, "x")


@pytest.fixture
def ap50_mean(monkeypatch):
    """A new metric: one registry entry and no other edit (removed after the test)."""
    m = Metric("AP50_mean", MAXIMIZE, lambda r: (r["male"][AP50] + r["female"][AP50]) / 2,
               "mean of the two groups' AP@.50 on val", constraint=True)
    monkeypatch.setitem(METRICS, m.name, m)
    return m


def test_unregistered_metric_is_refused():
    with pytest.raises(ConfigError, match="select_metric must be one of"):
        make_config("adversarial", {"select_metric": "AP50_mean"})
    with pytest.raises(SpecError, match="unknown objective metric 'AP50_mean'"):
        parse_spec({"study": "s", "variant": "infonce", "n_trials": 1, "search_space": SPACE,
                    "objectives": [{"metric": "AP50_mean"}]})


def test_a_new_metric_flows_through_summarize_selection_and_specs(ap50_mean):
    results = [_result({AP50: 0.5}, {AP50: 0.3}), _result({AP50: 0.7}, {AP50: 0.5}), _result({AP50: 0.6}, {AP50: 0.6})]
    history = [{"epoch": e, **summarize(r)} for e, r in enumerate(results)]
    assert [h["AP50_mean"] for h in history] == pytest.approx([0.4, 0.6, 0.6])
    cfg = make_config("adversarial", {"select_metric": "AP50_mean"})
    assert Run.select(SimpleNamespace(cfg=cfg), history)["epoch"] == 1  # the trainer's selection; ties: earliest
    spec = parse_spec({"study": "s", "variant": "infonce", "n_trials": 1, "search_space": SPACE,
                       "objectives": [{"metric": "AP50_mean"}], "constraints": [{"metric": "AP50_mean_drop", "max": 0.05}]})
    assert spec.directions == [MAXIMIZE]
    per_seed = {42: {"val": history[0], "baseline": {"val": history[1]}}}
    assert constraint_values(spec, per_seed) == pytest.approx([0.6 - 0.4 - 0.05])
