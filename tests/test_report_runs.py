"""``faap report --runs``: paired bootstrap intervals between judged run folders and the clean detector,
checked against the numbers the folders' own summaries record."""

import json
import os
import shutil

import pytest
from test_eval_generator import _eval, original_checkpoint  # noqa: F401 (a fixture)

from faap.cli import main


@pytest.fixture(scope="module")
def judged(original_checkpoint, tiny_data, tmp_path_factory):  # noqa: F811
    """Two folders judged from one original checkpoint at two budgets: {name: (folder, summary)}."""
    root = tmp_path_factory.mktemp("judged")
    out = {}
    for name, eps in (("eps09", "0.09"), ("eps05", "0.05")):
        folder = str(root / name)
        assert _eval(original_checkpoint, tiny_data, folder, "--eps", eps) == 0
        with open(os.path.join(folder, "summary.json")) as f:
            out[name] = (folder, json.load(f))
    return out


def _report(tmp_path, *runs, extra=()):
    out = str(tmp_path / "report")
    code = main(["report", "--runs", *runs, "--out", out, "--replicates", "200", *extra])
    report = None
    if code == 0:
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
    return code, out, report


def test_numbers_equal_the_folders_summaries(judged, tmp_path, capsys):
    (a, sa), (b, sb) = judged["eps09"], judged["eps05"]
    code, out, rep = _report(tmp_path, a, b)
    assert code == 0 and "report written" in capsys.readouterr().out
    cond = rep["bootstrap"]["conditions"]
    assert list(cond) == ["clean", "eps09", "eps05"]
    assert cond["eps09"]["AP_gap"]["value"] == pytest.approx(sa["test"]["AP_gap"], abs=1e-9)
    assert cond["eps05"]["AP_gap"]["value"] == pytest.approx(sb["test"]["AP_gap"], abs=1e-9)
    assert cond["eps09"]["AR_gap"]["value"] == pytest.approx(sa["test"]["AR_gap"], abs=1e-9)
    assert cond["clean"]["AP_gap"]["value"] == pytest.approx(sa["baseline"]["test"]["AP_gap"], abs=1e-9)
    assert sa["baseline"]["test"]["AP_gap"] == sb["baseline"]["test"]["AP_gap"]
    pairs = {(c["a"], c["b"]): c for c in rep["comparisons"]}
    assert list(pairs) == [("eps09", "clean"), ("eps05", "clean"), ("eps05", "eps09")]
    change = pairs[("eps05", "eps09")]["AP_gap"]
    assert change["value"] == pytest.approx(sb["test"]["AP_gap"] - sa["test"]["AP_gap"], abs=1e-9)
    assert change["ci"][0] <= change["value"] <= change["ci"][1] and 0 <= change["p_two_sided"] <= 1
    assert rep["detectable_difference"]["half_width"] == pytest.approx(change["half_width"])
    print(f"eps 0.05 vs 0.09 on 12 + 12 test images, 200 replicates: half-width {change['half_width']:.3f}")
    assert rep["dataset_fingerprint"] == sa["dataset_fingerprint"] and rep["split"] == "test"
    assert rep["bootstrap"]["images"] == {"male": 12, "female": 12}
    text = open(os.path.join(out, "report.md")).read()
    assert sa["dataset_fingerprint"] in text and "seed-to-seed noise is **not** included" in text
    assert rep["clean_detections"].startswith(str(tmp_path.parent / "faap-cache"))  # the session cache, not ~/.cache
    assert "--eps 0.09 --split test" in text and f"{sb['test']['AP_gap'] - sa['test']['AP_gap']:+.3f}" in text
    for fig in ("test_gaps.png", "test_differences.png"):
        assert f"figures/{fig}" in text and os.path.getsize(os.path.join(out, "figures", fig)) > 1000


def test_seed_runs_are_averaged_and_a_folder_equals_itself(judged, tmp_path):
    (a, sa), (b, sb) = judged["eps09"], judged["eps05"]
    code, out, rep = _report(tmp_path, f"both={a},{b}", a, f"again={a}")
    assert code == 0
    cond = rep["bootstrap"]["conditions"]
    assert cond["both"]["runs"] == 2 and cond["eps09"]["runs"] == 1
    assert cond["both"]["AP_gap"]["value"] == pytest.approx((sa["test"]["AP_gap"] + sb["test"]["AP_gap"]) / 2, abs=1e-9)
    same = next(c for c in rep["comparisons"] if (c["a"], c["b"]) == ("again", "eps09"))["AP_gap"]
    assert same["value"] == 0 and same["ci"] == [0, 0] and same["p_two_sided"] == 1
    assert "Within both (several runs, averaged)" in open(os.path.join(out, "report.md")).read()


def test_other_clean_detection_files_use_the_first_and_say_so(judged, tmp_path):
    (a, sa) = judged["eps09"]
    copy, clean = str(tmp_path / "copy"), str(tmp_path / "clean.dets.json.gz")
    shutil.copytree(a, copy)
    shutil.copy(sa["clean_detections"]["test"], clean)
    with open(os.path.join(copy, "summary.json"), "w") as f:
        json.dump({**sa, "clean_detections": {"test": clean}}, f)
    code, _, rep = _report(tmp_path, a, copy)
    assert code == 0 and rep["clean_detections"] == sa["clean_detections"]["test"]
    assert len(rep["notes"]) == 1 and clean in rep["notes"][0]


def _edit(folder, name, **values):
    path = os.path.join(folder, name)
    with open(path) as f:
        text = f.read()
    for key, value in values.items():
        if name.endswith(".json"):
            text = json.dumps({**json.loads(text), key: value})
        else:
            text = "\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines())
    with open(path, "w") as f:
        f.write(text)


@pytest.mark.parametrize("case", ["fingerprint", "eval_size", "missing", "split", "no_val", "clean_label", "study"])
def test_bad_input_is_one_line_and_writes_nothing(judged, tmp_path, capsys, case):
    a = judged["eps09"][0]
    other, extra = str(tmp_path / "other"), ()
    if case in ("fingerprint", "eval_size"):
        shutil.copytree(a, other)
        if case == "fingerprint":
            _edit(other, "summary.json", dataset_fingerprint="0123456789abcdef")
        else:
            _edit(other, "config.yaml", eval_size=96)
    runs = {"missing": [a, str(tmp_path / "nope")], "clean_label": [f"clean={a}"]}.get(case, [a, other])
    if case in ("split", "no_val"):
        runs, extra = [a], ("--split", "dev" if case == "split" else "val")
    if case == "study":
        extra = ("--legacy", a)
    code, out, _ = _report(tmp_path, *runs, extra=extra)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("faap: error: "), err
    assert not os.path.exists(out)
    expected = {"fingerprint": ["dataset_fingerprint", a, other], "eval_size": ["eval_size", "128", "96"],
                "missing": ["nope", "does not exist"], "split": ["unknown split 'dev'"],
                "no_val": ["no saved detections on val", "evaluated on test"], "clean_label": ["'clean'"],
                "study": ["exactly one of", "--legacy and --runs"]}[case]
    for word in expected:
        assert word in err, (word, err)


def test_a_trained_run_beside_a_judged_checkpoint(judged, tiny_data, tmp_path):
    """A folder of ``faap train`` (seeded, val and test) reads like a judged one, on either split."""
    from conftest import tiny_values
    from faap.trainer import Run
    from faap.variants import make_config

    trained = str(tmp_path / "trained")
    summary = Run(make_config("infonce", tiny_values(tiny_data, epochs=1)), trained, progress=False).fit()
    a, sa = judged["eps09"]
    code, out, rep = _report(tmp_path, a, trained)
    assert code == 0
    cond = rep["bootstrap"]["conditions"]
    assert cond["trained"]["AP_gap"]["value"] == pytest.approx(summary["test"]["AP_gap"], abs=1e-9)
    assert cond["clean"]["AP_gap"]["value"] == pytest.approx(summary["baseline"]["test"]["AP_gap"], abs=1e-9)
    assert "faap train --variant infonce" in open(os.path.join(out, "report.md")).read()
    shutil.rmtree(out)
    code, out, rep = _report(tmp_path, trained, extra=("--split", "val"))
    assert code == 0 and rep["split"] == "val"
    cond = rep["bootstrap"]["conditions"]
    assert cond["trained"]["AP_gap"]["value"] == pytest.approx(summary["val"]["AP_gap"], abs=1e-9)
    assert cond["clean"]["AP_gap"]["value"] == pytest.approx(summary["baseline"]["val"]["AP_gap"], abs=1e-9)
    assert cond["trained"]["runs"] == 1 and f"(seed {summary['seed']})" in open(os.path.join(out, "report.md")).read()
