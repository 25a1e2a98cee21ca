"""The plug points: one metric registry, one run-folder type, variants that declare their report."""

import pytest

from faap.metrics import MAXIMIZE, METRICS, MINIMIZE, metric


def test_metric_registry_directions_and_selection():
    assert {m.direction for m in METRICS.values()} == {MINIMIZE, MAXIMIZE}
    assert all(m.name == name and m.description for name, m in METRICS.items())
    history = [{"epoch": 0, "AP_gap": 0.2, "AP_mean": 0.5}, {"epoch": 1, "AP_gap": 0.1, "AP_mean": 0.5},
               {"epoch": 2, "AP_gap": 0.1, "AP_mean": 0.4}]
    assert metric("AP_gap").best(history)["epoch"] == 1  # ties: the earliest
    assert metric("AP_mean").best(history)["epoch"] == 0
    with pytest.raises(Exception, match="unknown metric 'AP_gpa'.*did you mean 'AP_gap'"):
        metric("AP_gpa")


def test_spec_and_config_ask_the_registry():
    from ablations.spec import parse_spec
    from faap.config import TrainConfig, bounds_of

    assert bounds_of(TrainConfig, "select_metric")["choices"] == tuple(METRICS)
    for name, m in METRICS.items():
        spec = parse_spec({"study": "s", "variant": "infonce", "n_trials": 1, "objectives": [{"metric": name}],
                           "search_space": {"temperature": {"type": "float", "low": 0.05, "high": 0.5}}})
        assert spec.directions == [m.direction]
