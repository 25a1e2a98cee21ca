"""Feature space: the measures equal hand-computed values, differences pair the same images, a missing group
or too few images give one refusal line, and a study report shows the section with its figure."""

import os
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.features import Space, difference, feature_space, measure_space


def _space(clean_f, pert_f, clean_m, pert_m, ids=None):
    ids = ids or {"female": list(range(len(clean_f))), "male": list(range(100, 100 + len(clean_m)))}
    return Space({"female": np.array(clean_f, float), "male": np.array(clean_m, float)},
                 {"female": np.array(pert_f, float), "male": np.array(pert_m, float)}, ids)


HAND = _space([[0, 0], [2, 0]], [[3, 4], [2, 1]], [[0, 1], [0, 3]], [[0, 2], [0, 3]])
"""Female images move 5 and 1, male 1 and 0; centroids: clean female (1, 0), male (0, 2); perturbed female
(2.5, 2.5), male (0, 2.5)."""


def test_measures_equal_hand_computed_values():
    m = measure_space(HAND, replicates=200)
    expected = {"displacement_female": 3.0, "displacement_male": 0.5, "displacement_ratio": 6.0,
                "centroid_distance_before": np.sqrt(5), "centroid_distance_after": 2.5,
                "centroid_distance_change": 2.5 - np.sqrt(5), "centroid_cosine_before": 0.0,
                "centroid_cosine_after": 1 / np.sqrt(2), "centroid_cosine_change": 1 / np.sqrt(2)}
    assert set(m) == set(expected)
    for name, value in expected.items():
        assert m[name]["value"] == pytest.approx(value), name
    lo, hi = m["displacement_female"]["ci"]
    assert 1.0 <= lo <= hi <= 5.0  # a resample's mean lies between the smallest and the largest move


def test_difference_pairs_the_same_images():
    """``b`` moves each image twice as far as ``a``: on the same images the displacement difference is minus a's
    displacement in every resample, so its interval mirrors a's exactly; on other images it is wider."""
    rng = np.random.default_rng(1)
    clean_f, clean_m = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    move_f, move_m = rng.normal(size=(20, 4)) * rng.uniform(0.1, 3, (20, 1)), rng.normal(size=(20, 4))
    a = _space(clean_f, clean_f + move_f, clean_m, clean_m + move_m)
    b = _space(clean_f, clean_f + 2 * move_f, clean_m, clean_m + 2 * move_m)
    own, d = measure_space(a, replicates=300)["displacement_female"], difference(a, b, replicates=300)
    assert d["displacement_female"]["value"] == pytest.approx(-own["value"])
    assert d["displacement_female"]["ci"] == pytest.approx([-own["ci"][1], -own["ci"][0]])
    assert d["displacement_ratio"]["value"] == pytest.approx(0.0, abs=1e-12)
    other = _space(clean_f, clean_f + 2 * move_f, clean_m, clean_m + 2 * move_m,
                   {"female": list(range(50, 70)), "male": list(range(70, 90))})
    unpaired = difference(a, other, replicates=300)["displacement_female"]
    assert unpaired["value"] == pytest.approx(-own["value"])
    assert np.diff(unpaired["ci"])[0] > np.diff(d["displacement_female"]["ci"])[0]
    result = feature_space({"ref": {"decoder": b}, "best": {"decoder": a, "projection": a}}, n_images=20,
                           replicates=50)
    assert result["differences"]["of"] == ["best", "ref"]
    assert set(result["differences"]["spaces"]) == {"decoder"} and result["differences"]["spaces"]["decoder"]["paired"]
    assert result["conditions"]["best"]["perplexity"] == 19


def _ctx(tmp_path):
    conditions = {"adversarial": SimpleNamespace(runs=["run_ref"]), "trial 0": SimpleNamespace(runs=["run_best"])}
    return SimpleNamespace(ref="adversarial", best=SimpleNamespace(name="trial 0"), n_images=64, replicates=50,
                           out_dir=str(tmp_path), data=SimpleNamespace(conditions=conditions), label=lambda c: c,
                           features=lambda run: None)


@pytest.mark.parametrize("female, male, why", [
    (8, 0, "the male group is missing from the validation images of adversarial"),
    (5, 30, "the female group of adversarial has 5 validation images, fewer than the 6 a t-SNE perplexity of 5 needs"),
])
def test_missing_group_or_too_few_images_refused_in_one_line(tmp_path, monkeypatch, female, male, why):
    import reports.features

    def spaces(run, n_images, extracted=None):
        rng = np.random.default_rng(0)
        groups = {"female": female, "male": male}
        clean = {g: rng.normal(size=(n, 3)) for g, n in groups.items() if n}
        ids = {g: list(range(n)) for g, n in groups.items() if n}
        return {"decoder": Space(clean, {g: v + 1 for g, v in clean.items()}, ids)}

    monkeypatch.setattr(reports.features, "run_spaces", spaces)
    lines, data, warnings = reports.features.feature_space_section(_ctx(tmp_path))
    assert [line for line in lines if line] == [reports.features.HEADING, f"feature space not drawn: {why}."]
    assert data == {"feature_space": {"n_images": 64, "refused": why}} and warnings == ()
    assert not os.path.exists(tmp_path / "figures")  # nothing drawn


def test_study_report_shows_the_feature_space(tiny_data, tmp_path, monkeypatch):
    """A small study (the 7th and one InfoNCE trial): the section, its figure and its numbers; the decoder
    displacement equals the pooled features' own, from the one extraction the diagnostics also use."""
    from ablations.runner import prepare
    from ablations.worker import work
    from analysis.diagnostics import run_features
    from analysis.study import load_study_data
    from reports.build import build
    from test_sweep_workers import write_spec

    url = str(tmp_path / "studies" / "journal.log")
    spec = write_spec(tmp_path, tiny_data, "feat", [0.2], epochs=1, baselines=["adversarial", "clean"])
    _, name = prepare(spec, url)
    work(name, url, "off", heartbeat_interval=5, log=lambda m: None)
    out = str(tmp_path / "report")
    import reports.build

    calls = []
    real = reports.build.run_features
    monkeypatch.setattr(reports.build, "run_features", lambda run, **kw: calls.append(run) or real(run, **kw))
    rep = build(name, url, out, replicates=50, n_images=8)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 2  # each run's features extracted once
    text = open(os.path.join(out, "report.md")).read()
    assert "## Feature space (clean vs perturbed)" in text and "figures/feature_space.png" in text
    assert os.path.isfile(os.path.join(out, "figures", "feature_space.png"))
    assert "first 8 validation images per group" in text and "paired on the same images" in text
    fs = rep["feature_space"]
    assert list(fs["conditions"]) == ["adversarial", "trial 0"] and fs["differences"]["of"] == ["trial 0", "adversarial"]
    assert set(fs["conditions"]["adversarial"]["spaces"]) == {"decoder"}  # the 7th has no projection head
    assert set(fs["conditions"]["trial 0"]["spaces"]) == {"decoder", "projection"}
    assert fs["conditions"]["trial 0"]["images"] == {"female": 8, "male": 8}
    run = load_study_data(name, url).conditions["trial 0"].runs[0]
    feats = run_features(run, n_images=8, views=("clean", "perturbed")).features["female"]
    moved = (feats["perturbed"].mean(1) - feats["clean"].mean(1)).norm(dim=-1)
    measured = fs["conditions"]["trial 0"]["spaces"]["decoder"]
    assert measured["displacement_female"]["value"] == pytest.approx(float(moved.mean()), rel=1e-5)
    shift = rep["diagnostics"]["feature_shift"]["female"]  # relative change, from the same extraction
    assert shift == pytest.approx(float(moved.mean() / feats["clean"].mean(1).norm(dim=-1).mean()), rel=1e-5)
    diff = fs["differences"]["spaces"]["decoder"]["displacement_female"]
    ref = fs["conditions"]["adversarial"]["spaces"]["decoder"]["displacement_female"]
    assert diff["value"] == pytest.approx(measured["displacement_female"]["value"] - ref["value"])
