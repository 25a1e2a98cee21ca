"""InfoNCE's hypotheses: H2's points and run-resampling interval; every rule on intervals, each for all three
outcomes on made-up data; the judges on evidence."""

import numpy as np
import pandas as pd

from analysis.diagnostics import loss_vs_gap_points
from faap.evidence import Best
from faap.measures import cosine_summary, effective_rank, rank_correlation
from faap.variants.infonce import (H1_SAME_MARGIN, H1_VIEW_MARGIN, H2_WEAK_TIE, H3_RANK_DROP, H3_RANK_STABLE,
                                   H3_UNIFORMITY_RISE, HYPOTHESES, h1_measure, h1_verdict, h2_verdict, h3_measure,
                                   h3_verdict)


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
    """The members InfoNCE's judges read: the best trial, its run's features (and per image), the points."""

    best = Best("trial 1", {"temperature": 0.1}, ("/runs/trial_1/seed_42",))

    def __init__(self, features, points, images=None):
        self._features, self._points, self._images = features, points, images

    def features(self):
        return self._features

    def image_features(self):
        return self._images

    def loss_vs_gap_points(self, loss):
        assert loss == "loss_infonce"
        return self._points


def _groups(make, n=32, seed=0):
    """Per-image arrays of both groups: ``make(rng, group) -> {name: array}``."""
    rng = np.random.default_rng(seed)
    return {g: make(rng, g) for g in ("female", "male")}


def _h1(images):
    f, m = images["female"], images["male"]
    measured = h1_measure(images, 300)
    return h1_verdict({"h1_features_before": cosine_summary(f["clean"], m["clean"], f["view_a"], m["view_a"])}, measured)


def _viewed(clean, noise, rng):
    return {"clean": clean, "view_a": clean + noise * rng.normal(size=clean.shape)}


def test_h1_rule_on_intervals_all_three_outcomes():
    # groups far apart, views of one image nearly the same: supported, on both margins
    apart = _groups(lambda rng, g: _viewed(3 * np.eye(64)[int(g == "male")] + rng.normal(size=(32, 64)), 0.1, rng))
    verdict, text, stats = _h1(apart)
    assert verdict == "supported" and stats["carried_by"] == "both" and "carried by both margins" in text
    assert stats["views_minus_cross_ci"][0] > H1_VIEW_MARGIN and stats["cross_minus_same_ci"][1] <= H1_SAME_MARGIN
    # a large shared component, views noisier than the images differ: views no more alike than cross pairs
    verdict, text, stats = _h1(_groups(lambda rng, g: _viewed(5 + rng.normal(size=(32, 64)), 3, rng)))
    assert verdict == "not supported" and stats["carried_by"] == "views_minus_cross"
    assert stats["views_minus_cross_ci"][1] <= H1_SAME_MARGIN and "carried by two views minus cross-gender" in text
    # every man the twin of a woman: cross-gender pairs more alike than same-group ones
    rng = np.random.default_rng(1)
    f = rng.normal(size=(16, 64))
    m = f + 0.1 * rng.normal(size=f.shape)
    verdict, _, stats = _h1({"female": {"clean": f, "view_a": f}, "male": {"clean": m, "view_a": m}})
    assert verdict == "not supported" and stats["carried_by"] == "cross_minus_same"
    assert stats["cross_minus_same_ci"][0] > H1_SAME_MARGIN
    # four images a group: the cross-minus-same interval reaches across its bound
    few = _groups(lambda rng, g: _viewed(rng.normal(size=(4, 64)), 1, rng))
    verdict, text, stats = _h1(few)
    lo, hi = stats["cross_minus_same_ci"]
    assert verdict == "inconclusive" and stats["carried_by"] == "cross_minus_same" and lo < H1_SAME_MARGIN < hi
    assert "95% CI [" in text
    one = {g: {k: v[:1] for k, v in a.items()} for g, a in few.items()}  # one image a group: no interval
    assert _h1(one)[0] == "inconclusive" and _h1(one)[2]["views_minus_cross_ci"] is None


def _h3(images):
    both = {k: np.concatenate([images["female"][k], images["male"][k]]) for k in ("clean", "perturbed")}
    h3 = {"effective_rank_before": effective_rank(both["clean"]), "effective_rank_after": effective_rank(both["perturbed"]),
          "feature_dim": 32, "dim_variance_before": 1.0, "dim_variance_after": 1.0}
    if "projection_before" in images["female"]:
        h3.update(uniformity_before=0.0, uniformity_after=0.0, alignment_before=0.0, alignment_after=0.0)
    return h3_verdict({"h3": h3}, h3_measure(images, 300))


def _squashed(frac, projections=None):
    def make(rng, g):
        c = rng.normal(size=(32, 32))
        p = c.copy()
        p[:, :int(32 * frac)] *= 0.5 if frac < 0.5 else 0.01
        return {"clean": c, "perturbed": p, **(projections(rng) if projections else {})}
    return _groups(make)


def test_h3_rule_on_intervals_all_three_outcomes():
    verdict, text, stats = _h3(_squashed(0.7))  # most dimensions squashed: the rank drops
    assert verdict == "supported" and stats["carried_by"] == "rank_drop" and stats["rank_drop_ci"][0] > H3_RANK_DROP
    assert "carried by the effective rank's drop" in text
    crowd = lambda rng: {"projection_before": rng.normal(size=(32, 16)),  # noqa: E731
                         "projection_after": 1 + 0.05 * rng.normal(size=(32, 16))}
    verdict, text, stats = _h3(_squashed(0.0, crowd))  # the rank kept, the projections crowd together
    assert verdict == "supported" and stats["carried_by"] == "uniformity_rise"
    assert stats["uniformity_rise_ci"][0] > H3_UNIFORMITY_RISE and stats["rank_drop_ci"] == (0.0, 0.0)
    assert "keep their rank" in text and "carried by the projections' uniformity rise" in text
    same = lambda rng: (lambda z: {"projection_before": z, "projection_after": z})(rng.normal(size=(32, 16)))  # noqa: E731
    verdict, text, stats = _h3(_squashed(0.0, same))  # nothing moved: both intervals clear
    assert verdict == "not supported" and stats["carried_by"] == "rank_drop and uniformity_rise"
    verdict, text, stats = _h3(_squashed(0.25))  # a drop between 'stable' and 'collapse'
    lo, hi = stats["rank_drop_ci"]
    assert verdict == "inconclusive" and stats["carried_by"] == "rank_drop" and H3_RANK_STABLE < hi and lo < H3_RANK_DROP


def test_judges_read_the_evidence_and_describe_their_figures():
    sims = lambda views, same, cross: {"two_views": views, "same_group": same, "cross_group": cross}  # noqa: E731
    images = _squashed(0.7)
    for g in images:
        images[g]["view_a"] = images[g]["clean"] + 0.1
    features = {"n_images": {"female": 32, "male": 32}, "h1_features_before": sims(0.9, 0.6, 0.55),
                "h1_features_after": sims(0.8, 0.5, 0.5),
                "h3": {"effective_rank_before": 20.0, "effective_rank_after": 15.0, "feature_dim": 64,
                       "dim_variance_before": 0.1, "dim_variance_after": 0.08}}
    points = _runs(12, -2.0)
    h1, h2, h3 = (h.judge(_Evidence(features, points, images)) for h in HYPOTHESES)
    assert (h1.verdict, h1.text, h1.stats) == h1_verdict(features, h1_measure(images))
    assert h1.where == "32 female and 32 male validation images resampled (1000 draws), run trial 1 seed_42"
    assert h1.figure.kind == "bars" and h1.figure.name == "h1_similarity.png"
    assert h1.figure.data == {"before": {"two views": 0.9, "same group": 0.6, "cross group": 0.55},
                              "after": {"two views": 0.8, "same group": 0.5, "cross group": 0.5}}
    assert (h2.verdict, h2.text, h2.stats) == h2_verdict(points)
    assert h2.figure.kind == "scatter" and h2.figure.data is points and h2.figure.name == "h2_loss_vs_gap.png"
    assert h2.figure.xlabel == "InfoNCE loss drop since epoch 0"
    assert (h3.verdict, h3.text, h3.stats) == h3_verdict(features, h3_measure(images))
    assert h3.verdict == "supported" and h3.figure is None and h3.where == h1.where
