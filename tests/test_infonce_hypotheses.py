"""InfoNCE's hypotheses: H2's points, the run-resampling interval and the rule; the judges on evidence."""

import numpy as np
import pandas as pd

from analysis.diagnostics import loss_vs_gap_points
from faap.evidence import Best
from faap.measures import rank_correlation
from faap.variants.infonce import H2_WEAK_TIE, HYPOTHESES, h1_verdict, h2_verdict, h3_verdict


def _frame(rows):
    return pd.DataFrame([{"run": r, "epoch": e, "metric": m, "value": v} for r, e, m, v in rows])


def test_points_are_loss_drop_and_gap_change_with_the_run():
    rows = [("a", 0, "loss_infonce", 5.0), ("a", 0, "AP_gap", 0.30), ("a", 1, "loss_infonce", 4.0),
            ("a", 1, "AP_gap", 0.25), ("a", 2, "loss_infonce", 3.5), ("a", 2, "AP_gap", 0.28),
            ("b", 0, "loss_infonce", 6.0), ("b", 0, "AP_gap", 0.31), ("b", 1, "loss_infonce", 6.5),
            ("b", 1, "AP_gap", 0.35), ("b", 1, "AP", 0.9)]
    pts = loss_vs_gap_points(_frame(rows), "loss_infonce", clean_gap=0.30)
    # epoch 0 is the reference of each run; drop = loss at 0 - loss now; change = gap - clean gap
    np.testing.assert_allclose(pts, [[1.0, -0.05, 0], [1.5, -0.02, 0], [-0.5, 0.05, 1]], atol=1e-12)
    assert loss_vs_gap_points(_frame(rows), "loss_other", 0.3).shape == (0, 3)


def test_interval_resamples_runs_not_points():
    """Epochs of one run repeat that run's point: a point bootstrap counts them as independent
    evidence and gives a narrower interval than resampling the runs."""
    rng = np.random.default_rng(0)
    runs = rng.normal(size=(6, 2))
    pts = np.array([[*runs[r] + rng.normal(scale=0.01, size=2), r] for r in range(6) for _ in range(8)])
    clustered = rank_correlation(pts, 500)
    as_points = rank_correlation(pts[:, :2], 500)
    assert clustered["runs"] == 6 and as_points["runs"] == 48 and clustered["rho"] == as_points["rho"]
    width = lambda s: s["ci"][1] - s["ci"][0]  # noqa: E731
    assert width(clustered) > 1.5 * width(as_points)
    assert "rho" not in rank_correlation(pts[pts[:, 2] < 3], 100)  # 3 runs: no interval


def _runs(n_runs, slope, seed=0, per_run=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_runs * per_run)
    y = slope * x + rng.normal(size=x.size)
    return np.column_stack([x, y, np.repeat(np.arange(n_runs), per_run)])


def test_h2_rule_reads_wide_intervals_as_inconclusive():
    tied = h2_verdict(_runs(12, -2.0), 500)
    assert tied[0] == "not supported" and tied[2]["ci"][1] < 0
    untied = h2_verdict(_runs(60, 0.0), 500)
    assert untied[0] == "supported" and untied[2]["ci"][0] > H2_WEAK_TIE
    wide = h2_verdict(_runs(6, 0.0, seed=3), 500)  # few runs: the interval reaches both sides
    lo, hi = wide[2]["ci"]
    assert lo < H2_WEAK_TIE and hi > 0 and wide[0] == "inconclusive" and "admits a tie" in wide[1]
    few = h2_verdict(_runs(3, -2.0), 500)
    assert few[0] == "inconclusive" and few[1].startswith("only 9 (run, epoch) points from 3 runs")


class _Evidence:
    """The members InfoNCE's judges read: the best trial, its run's features, the loss/gap points."""

    best = Best("trial 1", {"temperature": 0.1}, ("/runs/trial_1/seed_42",))

    def __init__(self, features, points):
        self._features, self._points = features, points

    def features(self):
        return self._features

    def loss_vs_gap_points(self, loss):
        assert loss == "loss_infonce"
        return self._points


def test_judges_read_the_evidence_and_describe_their_figures():
    sims = lambda views, same, cross: {"two_views": views, "same_group": same, "cross_group": cross}  # noqa: E731
    features = {"n_images": {"female": 5, "male": 7}, "h1_features_before": sims(0.9, 0.6, 0.55),
                "h1_features_after": sims(0.8, 0.5, 0.5),
                "h3": {"effective_rank_before": 20.0, "effective_rank_after": 15.0, "feature_dim": 64,
                       "dim_variance_before": 0.1, "dim_variance_after": 0.08}}
    points = _runs(12, -2.0)
    h1, h2, h3 = (h.judge(_Evidence(features, points)) for h in HYPOTHESES)
    assert (h1.verdict, h1.text) == h1_verdict(features)
    assert h1.where == "5 female and 7 male validation images, run trial 1 seed_42"
    assert h1.figure.kind == "bars" and h1.figure.name == "h1_similarity.png"
    assert h1.figure.data == {"before": {"two views": 0.9, "same group": 0.6, "cross group": 0.55},
                              "after": {"two views": 0.8, "same group": 0.5, "cross group": 0.5}}
    assert (h2.verdict, h2.text, h2.stats) == h2_verdict(points)
    assert h2.figure.kind == "scatter" and h2.figure.data is points and h2.figure.name == "h2_loss_vs_gap.png"
    assert h2.figure.xlabel == "InfoNCE loss drop since epoch 0"
    assert (h3.verdict, h3.text) == h3_verdict(features) and h3.verdict == "supported" and h3.figure is None
