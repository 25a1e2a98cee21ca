"""Reports: a small real study's report equals its stored numbers; the legacy report equals its files."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ablations.runner import prepare
from ablations.worker import work
from test_legacy import LEGACY
from test_sweep_workers import write_spec


def _assert_pngs(out_dir, text):
    figs = sorted(os.listdir(os.path.join(out_dir, "figures")))
    assert figs
    for name in figs:
        path = os.path.join(out_dir, "figures", name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as im:
            im.verify()
        assert f"figures/{name}" in text, f"{name} is not shown in the report"


@pytest.fixture(scope="module")
def small_study(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    url = str(tmp / "studies" / "journal.log")  # run folders go beside the journal
    spec = write_spec(tmp, tiny_data, "rep", [0.05, 0.5], epochs=2, baselines=["adversarial", "clean"],
                      seeds=[42, 43])
    study, name = prepare(spec, url)
    work(name, url, "off", heartbeat_interval=5, log=lambda m: None)
    return name, url, tmp


def test_study_report_numbers_equal_stored(small_study):
    from reports.build import build

    name, url, tmp = small_study
    out = str(tmp / "report")
    rep = build(name, url, out, replicates=200, n_images=12)
    text = open(os.path.join(out, "report.md")).read()
    for section in ("## Verdict", "## Clean detector, 7th baseline and the variant", "## Across seeds",
                    "## Per-epoch curves", "## Hyperparameter effects", "## Why did it fail?", "## Reproduce"):
        assert section in text
    _assert_pngs(out, text)
    from analysis.study import load_study_data

    data = load_study_data(name, url)
    clean = data.study.user_attrs["clean_baseline"]
    for split in ("val", "test"):
        conds = rep["splits"][split]["conditions"]
        assert conds["clean"]["AP_male"]["value"] == pytest.approx(clean[split]["AP_male"], abs=1e-9)
        assert conds["clean"]["AP_gap"]["value"] == pytest.approx(clean[split]["AP_gap"], abs=1e-9)
        for cname, cond in data.conditions.items():
            if cname == "clean":
                continue
            summaries = [data.run_summary(r)[split] for r in cond.runs]
            assert conds[cname]["runs"] == len(spec_seeds := summaries) == 2
            assert conds[cname]["AP_gap"]["value"] == pytest.approx(np.mean([s["AP_gap"] for s in spec_seeds]), abs=1e-9)
            assert conds[cname]["AR_female"]["value"] == pytest.approx(np.mean([s["AR_female"] for s in spec_seeds]), abs=1e-9)
            lo, hi = conds[cname]["AP_gap"]["ci"]
            assert lo <= conds[cname]["AP_gap"]["value"] <= hi
    best = rep["best"]
    d = rep["verdict_test"]["difference"]
    assert d["value"] == pytest.approx(rep["splits"]["test"]["conditions"][best]["AP_gap"]["value"]
                                       - rep["splits"]["test"]["conditions"]["adversarial"]["AP_gap"]["value"])
    assert f"{d['value']:+.3f}" in text
    assert set(rep["hypotheses"]) == {"h1", "h2", "h3"}
    assert all(h["verdict"] in ("supported", "not supported", "inconclusive") for h in rep["hypotheses"].values())


def test_legacy_report_numbers_equal_files(tmp_path):
    from reports.legacy import build

    out = str(tmp_path / "legacy")
    rep = build(LEGACY, out)
    text = open(os.path.join(out, "report.md")).read()
    for row in rep["rows"]:
        with open(os.path.join(LEGACY, row["source"])) as f:
            data = json.load(f)
        for cond in ("baseline", "perturbed"):
            for group in ("male", "female"):
                for metric in ("AP", "AR"):
                    value = row.get(f"{cond}_{metric}_{group}")
                    if cond in data:
                        assert value == data[cond][group][metric]
                        assert f"{value:.4f}" in text or metric == "AR"
                    else:
                        assert value is None
        if "gaps" in data and "baseline" in data["gaps"]["AP"]:
            assert row["baseline_AP_gap"] == pytest.approx(data["gaps"]["AP"]["baseline"], abs=1e-12)
    assert any("different clean baselines on test" in w and "0.0977" in w and "0.1063" in w for w in rep["warnings"])
    assert sum("no baseline of its own" in w for w in rep["warnings"]) == 2
    _assert_pngs(out, text)
