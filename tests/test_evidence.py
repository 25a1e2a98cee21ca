"""The evidence judges read (analysis.evidence.StudyEvidence) equals the numbers it is built from, and the
figures judges describe are drawn by the report."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.bootstrap import bootstrap_gap, match_table
from analysis.diagnostics import loss_vs_gap_points
from analysis.evidence import StudyEvidence
from faap.evidence import Best, Difference, Estimate, Evidence, Figure
from test_evaluate import _random_case


@pytest.fixture(scope="module")
def splits():
    gt, dets_a = _random_case(5, 20)
    _, dets_b = _random_case(9, 20)
    fem_gt, fem_dets = _random_case(6, 20)
    a, b, f = match_table(gt, dets_a), match_table(gt, dets_b), match_table(fem_gt, fem_dets)
    return {"test": bootstrap_gap({"clean": [a], "trial 0": [a, b]}, {"clean": [f], "trial 0": [f, f]}, replicates=100)}


def _rows(condition, run, metric, values):
    return [{"condition": condition, "trial": None, "seed": 0, "run": run, "epoch": e, "split": "val",
             "metric": metric, "value": v} for e, v in enumerate(values)]


def test_comparisons_are_the_bootstraps_numbers(splits):
    ev = StudyEvidence(pd.DataFrame(), Best("trial 0", {}, ("r",)), "clean", ("clean", "trial 0"), splits,
                       {"test": {"AP_gap": 0.25}})
    raw = splits["test"]["differences"]["trial 0 - clean"]["AR_gap"]
    assert ev.difference("test", "trial 0", "clean", "AR_gap") == Difference(
        raw["value"], tuple(raw["ci"]), raw["half_width"], raw["p_two_sided"], (2, 1))
    gap = splits["test"]["conditions"]["clean"]["AP_gap"]
    assert ev.condition("test", "clean") == Estimate(gap["value"], tuple(gap["ci"]))
    assert ev.clean_gap("test") == 0.25 and ev.clean_gap("val") is None
    with pytest.raises(KeyError, match="no test difference 'trial 9 - clean'"):
        ev.difference("test", "trial 9", "clean")
    # every member the interface names is there
    members = {name for name in dir(Evidence) if not name.startswith("_")} | set(Evidence.__annotations__)
    assert {"best", "conditions", "epochs", "features", "per_run"} <= members
    assert all(hasattr(ev, name) for name in members)


def test_records_are_the_trials_by_run_and_epoch():
    rows = (_rows("trial 1", "b", "AP_gap", [0.30, 0.28, 0.29]) + _rows("trial 0", "a", "AP_gap", [0.2, 0.1])
            + _rows("adversarial", "z", "AP_gap", [0.5]) + _rows("trial 0", "a", "loss_infonce", [5.0, 4.0]))
    ev = StudyEvidence(pd.DataFrame(rows[::-1]), Best("trial 0", {}, ("a",)), clean={"val": {"AP_gap": 0.15}})
    recs = ev.trial_epochs("AP_gap")
    assert recs["run"].tolist() == ["a", "a", "b", "b", "b"] and recs["epoch"].tolist() == [0, 1, 0, 1, 2]
    runs = ev.per_run("AP_gap")
    assert list(runs) == ["a", "b"] and runs["b"].tolist() == [0.30, 0.28, 0.29]  # no baseline run 'z'
    trials = pd.DataFrame(rows)[lambda d: d["condition"] != "adversarial"]
    np.testing.assert_array_equal(ev.loss_vs_gap_points("loss_infonce"),
                                  loss_vs_gap_points(trials, "loss_infonce", 0.15))
    assert ev.loss_vs_gap_points("loss_infonce").tolist() == [[1.0, 0.1 - 0.15, 0.0]]


def test_no_records_and_features_measured_once():
    calls = []
    ev = StudyEvidence(pd.DataFrame(), Best("trial 0", {}, ("a",)), measure_features=lambda: calls.append(1) or {"x": 1})
    assert ev.trial_epochs("AP_gap").empty and ev.per_run("AP_gap") == {}
    assert ev.loss_vs_gap_points("loss_infonce").shape == (0, 3)
    assert ev.features() == {"x": 1} and ev.features() == {"x": 1} and calls == [1]
    with pytest.raises(RuntimeError, match="no checkpoint"):
        StudyEvidence(pd.DataFrame(), Best("trial 0", {}, ())).features()


def test_the_report_draws_described_figures(tmp_path):
    from reports.figures import draw

    bars = Figure("bars", {"before": {"x": 0.5, "y": 0.2}, "after": {"x": 0.4, "y": 0.3}}, "b.png", "cosine")
    scatter = Figure("scatter", np.array([[0.1, -0.2, 0], [0.3, 0.1, 1]]), "s.png", "gap", "loss drop", "a title")
    for fig in (bars, scatter):
        path = draw(fig, str(tmp_path))
        assert path == os.path.join("figures", fig.name)
        with Image.open(tmp_path / path) as im:
            im.verify()
    with pytest.raises(ValueError, match="figure kind 'pie'"):
        Figure("pie", {}, "p.png", "share")


def test_per_image_features_travel_beside_the_reported_numbers():
    """Judges bootstrap over images from ``image_features``; report.json (a JSON dump of the diagnostics)
    keeps the numbers only."""
    import json

    from analysis.diagnostics import FeatureDiagnostics

    images = {"female": {"clean": np.zeros((3, 4))}, "male": {"clean": np.ones((2, 4))}}
    ev = StudyEvidence(pd.DataFrame(), Best("trial 0", {}, ("a",)),
                       measure_features=lambda: FeatureDiagnostics({"n_images": {"female": 3, "male": 2}}, images))
    assert ev.image_features() is images and ev.features()["n_images"] == {"female": 3, "male": 2}
    assert json.loads(json.dumps({"diagnostics": ev.features()})) == {"diagnostics": {"n_images": {"female": 3, "male": 2}}}
    plain = StudyEvidence(pd.DataFrame(), Best("trial 0", {}, ("a",)), measure_features=lambda: {"x": 1})
    with pytest.raises(RuntimeError, match="no per-image features"):
        plain.image_features()


def test_bootstrap_helpers():
    from faap.measures import bootstrap_ci, cluster_bootstrap_ci, cosine_summary, pair_mean

    x = np.random.default_rng(0).normal(size=400)
    value, (lo, hi) = bootstrap_ci(np.mean, x)
    assert value == x.mean() and (hi - lo) / 2 == pytest.approx(1.96 * x.std() / 20, rel=0.15)
    assert bootstrap_ci(np.mean, x) == (value, (lo, hi)) and bootstrap_ci(np.mean, x, seed=1) != (value, (lo, hi))
    sizes = set()  # each sample resampled on its own, keeping its size
    bootstrap_ci(lambda a, b: sizes.add((len(a), len(b))) or 0.0, x[:5], x[:7], replicates=20)
    assert sizes == {(5, 7)}
    assert bootstrap_ci(np.mean, x[:1]) == (x[0], None)
    # centred: the draws' median moved onto the value (a statistic resampling biases: distinct rows)
    distinct = lambda i: float(len(np.unique(i)))  # noqa: E731
    assert bootstrap_ci(distinct, np.arange(50))[1][1] < 50
    lo, hi = bootstrap_ci(distinct, np.arange(50), centred=True)[1]
    assert lo < 50 < hi
    # pair means leave out an image paired with its own bootstrap copy
    sim = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    assert pair_mean(sim, np.array([0, 0, 1])) == pytest.approx(0.2) and np.isnan(pair_mean(sim, np.array([2, 2])))
    assert pair_mean(sim, np.array([0, 0]), np.array([1, 2])) == pytest.approx(0.3)
    # cluster bootstrap: whole runs drawn; one run: its members
    runs = np.repeat(np.arange(4), [2, 3, 4, 5])
    draws = []
    cluster_bootstrap_ci(lambda v: draws.append(v) or 0.0, x[:14], runs, replicates=30)
    for v in draws[1:]:  # every member of a drawn run comes as often as the run was drawn
        counts = np.array([(v == value).sum() for value in x[:14]])
        assert all(len(set(counts[runs == r])) == 1 for r in range(4)) and counts.sum() == len(v)
    assert len({len(v) for v in draws}) > 1  # runs of different sizes drawn
    assert cluster_bootstrap_ci(np.mean, x[:20], np.zeros(20)) == bootstrap_ci(np.mean, x[:20])
    # the similarity summary through index draws equals the direct formula
    rng = np.random.default_rng(1)
    a, b, va, vb = (rng.normal(size=(n, 6)) for n in (4, 5, 4, 5))
    unit = lambda t: t / np.linalg.norm(t, axis=1, keepdims=True)  # noqa: E731
    aa, bb = unit(a) @ unit(a).T, unit(b) @ unit(b).T
    expected = {"two_views": np.concatenate([(unit(a) * unit(va)).sum(1), (unit(b) * unit(vb)).sum(1)]).mean(),
                "same_group": ((aa.sum() - 4) / 12 + (bb.sum() - 5) / 20) / 2, "cross_group": (unit(a) @ unit(b).T).mean()}
    assert cosine_summary(a, b, va, vb) == pytest.approx(expected)


def test_verdict_below_reads_the_whole_interval():
    from faap.measures import verdict_below

    assert verdict_below((-0.3, -0.1), 0.0) == "supported"
    assert verdict_below((0.0, 0.2), 0.0) == "not supported"  # at the bound counts as not below
    assert verdict_below((-0.1, 0.1), 0.0) == "inconclusive"
    assert verdict_below(None, 0.0) == "inconclusive"
    assert verdict_below((0.1, 0.2), 0.3, 0.05) == "supported"
    assert verdict_below((0.1, 0.2), 0.05, 0.1) == "not supported"
    assert verdict_below((0.06, 0.2), 0.05, 0.1) == "inconclusive"  # between the bounds: the null zone
