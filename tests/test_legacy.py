"""analysis.legacy on the original codebase's published result files (../shared/legacy)."""

import json
import os
import shutil

import numpy as np
import pytest

from analysis.legacy import RERUN_NOISE, baseline_clusters, eval_rows, eval_summary, load, loss_curves

# A verbatim copy of ../shared/legacy/faap_outputs (the published result files), so the test
# runs wherever the repository is cloned.
LEGACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "legacy_faap_outputs")


@pytest.fixture(scope="module")
def frame():
    return load(LEGACY)


def test_every_number_equals_its_source(frame):
    assert not frame.attrs["problems"]
    cache = {}
    for row in frame.itertuples():
        path = os.path.join(LEGACY, row.source)
        if row.source.endswith(".jsonl"):
            if path not in cache:
                with open(path) as f:
                    cache[path] = {json.loads(line)["epoch"]: json.loads(line) for line in f if line.strip()}
            rec = cache[path][row.epoch]
            key = row.metric + {"female": "_f", "male": "_m"}.get(row.group, "")
            assert rec[key] == row.value, (row.source, key)
            continue
        if path not in cache:
            with open(path) as f:
                cache[path] = json.load(f)
        data = cache[path]
        if row.condition == "data":
            folder = {"female": "women", "male": "men"}[row.group]
            assert data[f"{folder}_{row.split}"]["num_images"] == row.value
        elif row.metric == "epsilon":
            assert data["hyperparams"]["epsilon"] == row.value
        elif row.metric in ("AP", "AR"):
            assert data[row.condition][row.group][row.metric] == row.value
        else:
            assert data["details"][row.condition][row.group][row.metric] == row.value


def test_runs_epochs_and_splits_from_names(frame):
    s = eval_summary(frame).set_index("source")
    assert s.loc["faap_metrics_test_perturbed_wgan_1st_0010_test.json", "run"] == "wgan_1st"
    assert s.loc["faap_metrics_test_perturbed_wgan_1st_0010_test.json", "epoch"] == 10
    assert s.loc["faap_metrics_val_perturbed_1st_2.json", "epoch"] == 13  # from the generator checkpoint
    assert s.loc["faap_metrics_val_perturbed_1st_2.json", "split"] == "val"
    third = "faap_outputs_3rd_fix6_gpu_20260306/test_metrics_perturb_3rd_fix6_gpu_20260306_epoch_0008.json"
    assert s.loc[third, "run"] == "3rd_fix6_gpu_20260306" and s.loc[third, "epoch"] == 8
    assert not s.loc[third, "has_baseline"]  # perturbed-only form
    assert s.loc["faap_metrics.json", "baseline_AP_gap"] == pytest.approx(0.5107893112537605 - 0.4044822773562821)
    train = frame[(frame.source == "faap_outputs_3rd_fix6_gpu_20260306/train_log.jsonl") & (frame.metric == "obj_score")]
    assert set(train.group.dropna()) == {"female", "male"}
    assert "3rd_fix6_gpu_20260306" in frame.attrs["configs"]


def test_unreadable_files_are_listed(tmp_path):
    root = tmp_path / "faap_outputs"
    shutil.copytree(LEGACY, root)
    (root / "broken.json").write_text("{not json")
    (root / "other.json").write_text(json.dumps({"foo": 1}))
    frame = load(str(root))
    problems = dict(frame.attrs["problems"])
    assert "JSONDecodeError" in problems["broken.json"] and "unknown JSON schema" in problems["other.json"]
    assert len(frame) == len(load(LEGACY))


def test_baselines_cluster_within_rerun_noise(frame):
    """Files whose clean AP per group agree within rerun noise share a baseline; the two test splits do not."""
    rows = eval_rows(frame)
    for r in rows:
        if r["has_baseline"]:
            assert r["AP_gap_change"] == pytest.approx(r["perturbed_AP_gap"] - r["baseline_AP_gap"])
        else:
            assert np.isnan(r["AP_gap_change"])
    clusters = baseline_clusters(rows)
    test = sorted(round(c["gap"], 4) for c in clusters if c["split"] == "test")
    assert test == [0.0977, 0.1063]
    assert sorted(f for c in clusters for f in c["files"]) == sorted(r["source"] for r in rows if r["has_baseline"])
    for c in clusters:
        members = [r for r in rows if r["source"] in c["files"]]
        assert all(abs(r["baseline_AP_male"] - c["key"][0]) <= RERUN_NOISE for r in members)
    assert len(baseline_clusters(rows, noise=1.0)) == len({r["split"] for r in rows if r["has_baseline"]})


def test_loss_curves_per_run(frame):
    curves = loss_curves(frame)
    assert "3rd_fix6_gpu_20260306" in curves
    for epochs in curves.values():
        assert set(epochs["metric"]) == {"loss"} and epochs["epoch"].dtype.kind == "i" and len(epochs)


def test_a_file_without_its_split_stays_in_the_summary():
    """pandas' groupby drops missing keys by default: a file that does not say its split vanished from the
    table, and the report's 'does not say which split' warning could never fire."""
    import pandas as pd

    from analysis.legacy import COLUMNS

    rows = [{"run": "r", "epoch": 3, "split": split, "condition": cond, "group": g, "metric": m, "value": v,
             "source": src}
            for src, split in (("a.json", "test"), ("b.json", None))
            for cond in ("baseline", "perturbed") for g, v in (("male", 0.5), ("female", 0.4)) for m in ("AP", "AR")]
    wide = eval_summary(pd.DataFrame(rows, columns=COLUMNS))
    assert sorted(wide["source"]) == ["a.json", "b.json"]
    row = wide[wide["source"] == "b.json"].iloc[0]
    assert pd.isna(row["split"]) and row["baseline_AP_gap"] == pytest.approx(0.1)


def test_legacy_report_warns_about_and_tables_a_file_without_its_split(tmp_path):
    from reports.legacy import build

    root = tmp_path / "outputs"
    shutil.copytree(LEGACY, root)
    data = json.loads((root / "faap_metrics_val_perturbed_1st_2.json").read_text())
    data["hyperparams"].pop("split")
    (root / "faap_metrics_perturbed_1st_3.json").write_text(json.dumps(data))  # no split in name nor content
    build(str(root), str(tmp_path / "report"))
    text = (tmp_path / "report" / "report.md").read_text()
    assert "`faap_metrics_perturbed_1st_3.json` does not say which split it is on." in text
    section = text.split("## Evaluations whose split the file does not name")[1]
    assert "faap_metrics_perturbed_1st_3.json" in section.split("##")[0]
