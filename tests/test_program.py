"""``faap report --program``: studies of different variants against the 7th on the same test images,
Holm-adjusted; mismatched or incomplete programs are refused with one line and nothing written."""

import json
import os

import numpy as np
import pytest
import yaml

from ablations.runner import prepare
from ablations.worker import work
from faap.cli import main
from test_sweep_workers import FIXED


def _study(tmp, data, url, name, variant, space, seeds=(42, 43), baselines=("adversarial", "clean")):
    spec = tmp / f"{name}.yaml"
    spec.write_text(yaml.safe_dump({
        "study": name, "variant": variant, "data": data, "detector": "demo", "fixed": FIXED,
        "search_space": {k: {"type": "grid", "values": v} for k, v in space.items()}, "sampler": "grid",
        "objectives": [{"metric": "AP_gap", "direction": "minimize"}], "n_trials": 1, "seeds": list(seeds),
        "baselines": list(baselines)}))
    _, created = prepare(str(spec), url)
    work(created, url, "off", heartbeat_interval=5, log=lambda m: None)
    return created


@pytest.fixture(scope="module")
def program(tiny_data, tmp_path_factory):
    """An InfoNCE study and an MMD study on the same benchmark (each with its own 7th; the MMD one in a storage of
    its own), and an MMD study on another benchmark without the 7th."""
    from faap.data.synth import SynthConfig, generate

    tmp = tmp_path_factory.mktemp("program")
    url_a, url_b = str(tmp / "a" / "journal.log"), str(tmp / "b" / "journal.log")
    a = _study(tmp, tiny_data, url_a, "ideas-infonce", "infonce", {"temperature": [0.1]})
    b = _study(tmp, tiny_data, url_b, "ideas-mmd", "mmd", {"lambda_mmd": [1.0]})
    other = str(tmp / "other")
    generate(other, SynthConfig(seed=1, n_train=48, n_val=12, n_test=12), workers=1, progress=False)
    c = _study(tmp, other, url_a, "elsewhere", "mmd", {"lambda_mmd": [1.0]}, seeds=(42,), baselines=("clean",))
    return {"a": a, "b": b, "c": c, "url_a": url_a, "url_b": url_b, "tmp": tmp}


def _summaries(data, cname):
    return [data.run_summary(r)["test"] for r in data.conditions[cname].runs]


def test_program_ranks_each_idea_against_the_7th(program, capsys):
    from analysis.bootstrap import holm
    from analysis.study import load_study_data

    out = program["tmp"] / "report"
    args = ["report", "--program", program["a"], f"{program['b']}@{program['url_b']}", "--storage", program["url_a"],
            "--out", str(out), "--replicates", "200"]
    assert main(args) == 0, capsys.readouterr().err
    rep = json.loads((out / "report.json").read_text())
    text = (out / "report.md").read_text()
    a, b = load_study_data(program["a"], program["url_a"]), load_study_data(program["b"], program["url_b"])
    keys = {"clean": "clean", "adversarial": "adversarial", "a": f"{program['a']}: trial 0",
            "b": f"{program['b']}: trial 0"}
    assert [r["condition"] for r in rep["rows"]] == list(keys.values())
    conds = rep["bootstrap"]["conditions"]
    # Each condition is the mean of its seed runs' own test numbers; the 7th's runs are the first study's.
    for key, data, cname in (("adversarial", a, "adversarial"), ("a", a, "trial 0"), ("b", b, "trial 0")):
        runs = _summaries(data, cname)
        assert conds[keys[key]]["runs"] == len(runs) == 2
        for metric in ("AP_gap", "AP_mean"):
            assert conds[keys[key]][metric]["value"] == pytest.approx(np.mean([s[metric] for s in runs]), abs=1e-9)
            lo, hi = conds[keys[key]][metric]["ci"]
            assert lo <= conds[keys[key]][metric]["value"] <= hi
    assert rep["seventh"] == {"study": program["a"], "runs": a.conditions["adversarial"].runs}
    assert any(f"'{program['b']}': 2 runs" in n and f"only the 2 runs of study '{program['a']}'" in n for n in rep["notes"])
    # Differences from the 7th, Holm-adjusted across the two ideas; one verdict line each.
    diffs = {k: rep["bootstrap"]["differences"][f"{keys[k]} - adversarial"]["AP_gap"] for k in ("a", "b")}
    assert rep["holm"] == pytest.approx(holm({keys[k]: d["p_two_sided"] for k, d in diffs.items()}))
    for k, v in zip(("a", "b"), rep["verdicts"]):
        d = diffs[k]
        assert d["value"] == pytest.approx(conds[keys[k]]["AP_gap"]["value"] - conds["adversarial"]["AP_gap"]["value"])
        assert v["holm_p"] == rep["holm"][keys[k]] and v["difference"]["half_width"] == pytest.approx(d["half_width"])
        assert v["beats_7th"] == (d["ci"][1] < 0 and v["holm_p"] < 0.05)
        assert f"- {v['text']}." in text and f"Holm p {v['holm_p']:.3f}" in v["text"]
    assert rep["beat_the_7th"] == [v["label"] for v in rep["verdicts"] if v["beats_7th"]]
    # Trials are named by their parameters, in the table and in the figure.
    assert [v["label"] for v in rep["verdicts"]] == ["infonce trial 0 (temperature 0.1)", "mmd trial 0 (lambda_mmd 1)"]
    assert "| mmd trial 0 (lambda_mmd 1) | ideas-mmd | 2 |" in text
    assert "## Which idea beat the 7th?" in text and "figures/program_differences.png" in text
    assert rep["dataset_fingerprint"] == a.clean["fingerprint"] and rep["detector_id"] == a.clean["detector_id"]
    assert os.listdir(out / "figures") == ["program_differences.png"]


def test_a_mismatched_or_incomplete_program_is_refused(program, capsys):
    """Other data, no 7th anywhere, an unknown or repeated study: one line, exit 2, no folder written."""
    a, c, url = program["a"], program["c"], program["url_a"]
    out = program["tmp"] / "refused"
    cases = {(a, c): f"studies '{a}' and '{c}' differ in dataset_fingerprint",
             (c,): "no study of the program ran the 7th",
             (a, "nosuch"): "no study 'nosuch'",
             (a, f"{a}@{program['url_b']}"): f"study '{a}' is given twice",
             (a, "@x"): "give a study as NAME or NAME@STORAGE_URL"}
    for studies, words in cases.items():
        assert main(["report", "--program", *studies, "--storage", url, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("faap: error: ") and words in err, err
        assert not out.exists()
    for extra, words in (([a, "--program", a], "give exactly one of"), (["--program", a, "--plan-for", "0.01"],
                                                                         "--plan-for goes with a study report")):
        assert main(["report", *extra, "--storage", url, "--out", str(out)]) == 2
        assert words in capsys.readouterr().err and not out.exists()
