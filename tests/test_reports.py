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


def test_study_report_numbers_equal_stored(small_study, monkeypatch):
    import ablations.runner
    from reports.build import build

    # Loaders only read: the report never resolves (and so never writes) the study's data.
    monkeypatch.setattr(ablations.runner, "resolve_data", lambda spec: pytest.fail("the study loader wrote data"))
    name, url, tmp = small_study
    out = str(tmp / "report")
    drawn = _record_figure_labels(monkeypatch)
    rep = build(name, url, out, replicates=200, n_images=12)
    text = open(os.path.join(out, "report.md")).read()
    for section in ("## Verdict", "## Clean detector, 7th (adversarial) baseline and the variant", "## Across seeds",
                    "## Per-epoch curves", "## Per-epoch table", "## Hyperparameter effects", "## Why did it fail?",
                    "## Reproduce"):
        assert section in text
    _assert_pngs(out, text)
    from analysis.study import load_study_data

    data = load_study_data(name, url)
    _assert_trials_named_by_parameters(data, rep, text, drawn)
    # Intermediate values: step = seed index x epochs + epoch, the val AP gap of that epoch.
    first = data.intermediate[data.intermediate.trial == 0].sort_values("step")
    assert first["step"].tolist() == [0, 1, 2, 3]
    run42 = data.epochs[(data.epochs.trial == 0) & (data.epochs.seed == 42) & (data.epochs.metric == "AP_gap")]
    assert first["value"].tolist()[:2] == run42.sort_values("epoch")["value"].tolist()
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
    # Seed-aware verdicts: the 7th against the clean detector, the detectable difference, the null check.
    assert rep["reference"] == "adversarial"  # the reference InfoNCE declares, run by the study
    assert rep["verdict_reference_vs_clean_test"]["word"] in ("better (smaller gap)", "worse (larger gap)", "not distinguishable")
    assert rep["detectable_difference"] == pytest.approx(d["half_width"]) and "Smallest difference" in text
    assert rep["null_check"]["halves"] == [[42], [43]] and "Null check (negative control)" in text
    if rep["null_check"]["word"] != "not distinguishable":
        assert text.index("Warning: the null check failed") < text.index("## Verdict")
    assert set(rep["hypotheses"]) == {"h1", "h2", "h3"}
    assert all(h["verdict"] in ("supported", "not supported", "inconclusive") for h in rep["hypotheses"].values())
    _assert_control_and_plan(rep, text, tiny_data_root(data))
    # One factor (temperature 0.05 vs 0.5): the level against the base level, from the same bootstrap.
    factor = rep["factor"]
    base, [(other, level)] = factor["base"], list(factor["levels"].items())
    assert factor["parameter"] == "temperature" and level["level"] == 0.5
    assert level["difference"] == rep["splits"]["test"]["differences"][f"{other} - {base}"]["AP_gap"]
    assert level["holm_p"] == pytest.approx(level["difference"]["p_two_sided"])  # one comparison: no adjustment
    assert "## The factor: temperature" in text


def _record_figure_labels(monkeypatch) -> dict:
    """Wrap the forest and curve figures to record the condition names they draw."""
    from reports import figures

    drawn, forest, curves = {"forest": [], "curves": []}, figures.forest, figures.curves

    def forest_(rows, *args, **kw):
        drawn["forest"] += [r["label"] for r in rows]
        return forest(rows, *args, **kw)

    def curves_(epochs, *args, **kw):
        drawn["curves"] += list(dict.fromkeys(epochs["condition"]))
        return curves(epochs, *args, **kw)

    monkeypatch.setattr(figures, "forest", forest_)
    monkeypatch.setattr(figures, "curves", curves_)
    return drawn


def _assert_trials_named_by_parameters(data, rep, text, drawn):
    """Tables, the verdict and the figures name a trial by its number and parameters, never the number alone."""
    import re

    from reports.common import condition_label

    for cname, cond in data.conditions.items():
        if cond.kind != "trial":
            continue
        full = f"{cname} (temperature {cond.params['temperature']:.3g})"
        assert condition_label(cname, cond.params) == full
        assert full in drawn["forest"] and full in drawn["curves"], drawn
        assert re.search(rf"\| {re.escape(full)} \| 2 \|", text)  # the across-seeds table
    assert f"best: {condition_label(rep['best'], data.conditions[rep['best']].params)} |" in text
    assert "7th (adversarial)" in drawn["forest"] and "clean detector" in drawn["forest"]
    judged = re.compile(r"^\d+\. \*\*")  # a hypothesis's finding: the variant's own text names its run folder
    bare = [line for line in text.splitlines() if re.search(r"trial \d+(?! \()", line) and not judged.match(line)]
    assert not bare, bare


def tiny_data_root(data):
    return data.spec.data


def _assert_control_and_plan(rep, text, root):
    """The oracle's change is the one 'faap data oracle' measures (same eps, same test images); the plan's
    counts reach the target they were asked for."""
    from analysis.plan import Components, half_width
    from faap.oracle import oracle_effect

    control = rep["positive_control"]
    assert "## Positive control (synthetic benchmark)" in text
    measured = oracle_effect(root, "demo", control["eps"], "test")
    assert control["oracle"]["change"]["value"] == pytest.approx(measured["AP_gap_change"], abs=1e-9)
    assert control["oracle"]["share"] == pytest.approx(1.0)
    assert set(control) >= {"adversarial", rep["best"]}
    p = rep["plan"]
    c = Components.from_dict(p["components"])
    assert p["target"] == 0.004 and "Plan for a change of 0.004" in text
    assert p["model_half_width_now"] == pytest.approx(half_width(c, c.runs_a, c.runs_b))
    assert p["half_width_now"] == pytest.approx(rep["verdict_test"]["difference"]["half_width"])
    ratio = p["half_width_now"] / p["model_half_width_now"]  # the plan starts from the interval shown
    if p["seeds_needed"]:
        assert ratio * half_width(c, p["seeds_needed"], p["seeds_needed"]) <= 0.004
    if p["images_needed"]:
        assert ratio * half_width(c, c.runs_a, c.runs_b, p["images_needed"] / c.images) <= 0.004 * 1.0001


def _epoch_means(runs, epoch, key):
    from faap.rundir import RunDir

    values = [r[key] for run in runs for r in RunDir(run).read_metrics() if r["epoch"] == epoch]
    return float(np.mean(values)), len(values)


def test_per_epoch_table_equals_the_runs_records(small_study, tmp_path):
    """Val, every epoch: each condition's mean over its seeds' metrics.jsonl, the clean detector as the reference
    row, changes in points and % against it and against the 7th at the same epoch; exploratory test rows are
    added (and marked) once a run has them."""
    from faap.reeval import evaluate_epochs
    from reports.build import _context
    from reports.epochs import per_epoch_section

    name, url, _ = small_study
    ctx = _context(name, url, str(tmp_path), replicates=20, n_images=4)
    lines, data, _ = per_epoch_section(ctx)
    table = data["per_epoch"]
    assert table["test_exploratory"] is None and "selection on test" in lines[-2]
    runs = {c: ctx.data.conditions[c].runs for c in ("adversarial", ctx.best.name, ctx.median.name)}
    clean_gap, _ = _epoch_means(runs["adversarial"], 0, "baseline_AP_gap")
    assert table["val"]["clean"]["AP_gap"] == pytest.approx(clean_gap)
    assert [(r["condition"], r["epoch"]) for r in table["val"]["rows"]] == [(c, e) for c in runs for e in (0, 1)]
    for row in table["val"]["rows"]:
        for key in ("AP_male", "AP_female", "AP_gap"):
            mean, n = _epoch_means(runs[row["condition"]], row["epoch"], key)
            assert row[key] == pytest.approx(mean) and row["seeds"] == n == 2
        assert row["change_vs_clean"]["points"] == pytest.approx(100 * (row["AP_gap"] - clean_gap))
        assert row["change_vs_clean"]["percent"] == pytest.approx(100 * (row["AP_gap"] - clean_gap) / abs(clean_gap))
        if row["condition"] != "adversarial":
            ref, _ = _epoch_means(runs["adversarial"], row["epoch"], "AP_gap")
            assert row["change_vs_reference"]["points"] == pytest.approx(100 * (row["AP_gap"] - ref))
    assert sum(r["selected_on_val"] for r in table["val"]["rows"] if r["condition"] == ctx.best.name) == 2
    text = "\n".join(lines)
    assert "| clean detector (reference row) | every |" in text and "Δ gap vs 7th (adversarial) (points)" in text
    first = table["val"]["rows"][-1]
    assert f"| {first['AP_gap']:.4f} | {first['change_vs_clean']['points']:+.2f} | " in text

    for run in runs[ctx.best.name] + runs["adversarial"][:1]:  # the 7th: one seed of two on test
        evaluate_epochs(run, "all", "test", "cpu")
    lines, data, _ = per_epoch_section(ctx)
    test = data["per_epoch"]["test_exploratory"]
    assert "### Test, every epoch (exploratory)" in lines and "selection on test" in test["note"]
    assert [(r["condition"], r["seeds"]) for r in test["rows"]] == [("adversarial", 1)] * 2 + [(ctx.best.name, 2)] * 2
    assert all(r["exploratory"] for r in test["rows"])
    summary = ctx.data.run_summary(runs[ctx.best.name][0])
    assert test["clean"]["AP_gap"] == pytest.approx(summary["baseline"]["test"]["AP_gap"])
    chosen = [r for r in test["rows"] if r["condition"] == ctx.best.name and r["epoch"] == summary["selected_epoch"]]
    selected = [ctx.data.run_summary(r) for r in runs[ctx.best.name]]
    if len({s["selected_epoch"] for s in selected}) == 1:  # both seeds chose this epoch: their own test numbers
        assert chosen[0]["AP_gap"] == pytest.approx(np.mean([s["test"]["AP_gap"] for s in selected]))
    json.dumps(data, default=float)  # what build writes to report.json


def _shift_finding(evidence):
    """A toy hypothesis measured from the best run's saved checkpoint: the perturbation moves features."""
    from faap.variants.base import Finding

    shift = evidence.features()["feature_shift"]
    return Finding("supported" if shift["female"] > 0 else "not supported", f"female features move {shift['female']:.3f}",
                   {"shift": shift["female"]})


def _toy_section(evidence):
    """A variant's section: reads the study's evidence, returns a plain (lines, data) pair (no reports import)."""
    return ["## Toy section", ""], {"toy": {"best": evidence.best.name}}


def test_a_variant_declares_its_hypotheses_and_sections(small_study, tmp_path):
    """A variant defined here (no edit elsewhere) gets its hypothesis and section into a study's report."""
    from faap.variants import VARIANTS
    from faap.variants.base import Hypothesis, Variant
    from reports.build import _context, hypotheses_section, sections
    from reports.common import run_sections

    class ToyShift(Variant):
        name = "toy_shift"
        hypotheses = (Hypothesis("moves", "The perturbation moves features", "supported when they move at all",
                                 _shift_finding),)
        report_sections = (_toy_section,)

        def loss_terms(self, state):
            return {}

    class Quiet(Variant):
        name = "toy_quiet"

        def loss_terms(self, state):
            return {}

    try:
        name, url, _ = small_study
        ctx = _context(name, url, str(tmp_path), replicates=50, n_images=4)
        ctx.spec.variant = "toy_shift"  # the study's runs are InfoNCE's; the report asks this variant
        lines, data, _ = hypotheses_section(ctx)
        moved = ctx.report["diagnostics"]["feature_shift"]["female"]
        assert data == {"hypotheses": {"moves": {"verdict": "supported" if moved > 0 else "not supported",
                                                 "text": f"female features move {moved:.3f}", "shift": moved}}}
        assert any(line.startswith("1. **The perturbation moves features: ") for line in lines)
        json.dumps({**ctx.report, **data}, default=float)  # what build writes to report.json
        own = sections(ToyShift)[-2]
        assert own.variant_section is _toy_section and sections(ToyShift)[-1] == sections(Quiet)[-1]
        assert run_sections([own], ctx) == (["## Toy section", ""], {"toy": {"best": ctx.best.name}}, ())
        ctx.spec.variant = "toy_quiet"
        lines, data, _ = hypotheses_section(ctx)
        assert data == {"hypotheses": {}} and "declares no failure hypotheses" in " ".join(lines)
        assert "inconclusive" not in " ".join(lines)
    finally:
        VARIANTS.pop("toy_shift", None)
        VARIANTS.pop("toy_quiet", None)


def test_a_refused_report_writes_nothing(small_study, tmp_path, capsys):
    """A study not in the storage, no storage at all, or no legacy folder: one line, exit 2, no folder left."""
    from faap.cli import main

    _, url, _ = small_study
    out = tmp_path / "report"
    cases = {("nosuch", "--storage", url): "no study 'nosuch'",
             ("nosuch", "--storage", str(tmp_path / "none" / "journal.log")): "no study storage",
             ("--legacy", str(tmp_path / "nope")): "legacy results folder not found",
             ("x", "--storage", url, "--feature-images", "0"): "--feature-images must be at least 1",
             ("x", "--storage", url, "--plan-for", "-1"): "--plan-for must be a positive change"}
    for args, words in cases.items():
        assert main(["report", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert not out.exists(), os.listdir(out)


def test_sections_merge_their_data_and_share_the_claim():
    """Two sections giving one report.json key is a bug, not a silent overwrite; the claim is stated once."""
    from reports.common import ORIGINAL_CLAIM, claim_sentence, fmt_signed, run_sections

    def first(ctx):
        return ["a"], {"x": 1}

    def second(ctx):
        return ["b"], {"y": 2}, ("careful",)

    assert run_sections([first, second], None) == (["a", "b"], {"x": 1, "y": 2}, ("careful",))
    with pytest.raises(ValueError, match="second"):
        run_sections([first, second, second], None)
    assert ORIGINAL_CLAIM == 0.004
    assert claim_sentence(0.01) == ("The original study's claimed change (AP gap .106 -> .110, 0.004) is smaller "
                                    "than that")
    assert claim_sentence(0.002).endswith("is larger than that")
    assert fmt_signed(-0.0001) == "+0.000" and fmt_signed(float("nan")) == "n/a" and fmt_signed(-0.0126) == "-0.013"


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


def test_two_objective_study_report(tiny_data, tmp_path):
    """NSGA-II over two parameters: Pareto front and parallel coordinates; no 7th baseline (clean reference)."""
    import yaml

    from analysis.study import load_study_data
    from reports.build import build

    url = str(tmp_path / "studies" / "journal.log")
    spec = tmp_path / "pareto.yaml"
    spec.write_text(yaml.safe_dump({
        "study": "pareto", "variant": "infonce", "data": tiny_data, "detector": "demo",
        "fixed": {"train_scales": [128], "max_size": 128, "eval_size": 128, "random_crop": False, "batch_size": 4,
                  "epoch_samples": 8, "epochs": 1, "device": "cpu"},
        "search_space": {"temperature": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
                         "lambda_wass": {"type": "float", "low": 0.0, "high": 1.0}},
        "sampler": "nsga2", "objectives": [{"metric": "AP_gap"}, {"metric": "AP_mean"}], "n_trials": 3,
        "seeds": [42], "baselines": ["clean"]}))
    study, name = prepare(str(spec), url)
    work(name, url, "off", heartbeat_interval=5, log=lambda m: None)
    rep = build(name, url, str(tmp_path / "report"), replicates=100, n_images=8)
    text = open(tmp_path / "report" / "report.md").read()
    assert "Pareto front (AP_gap vs AP_mean, val)" in text and rep["pareto_front"]
    assert "figures/parallel.png" in text
    assert "vs clean" in text  # no 7th baseline in this study: the verdict compares with the clean detector
    data = load_study_data(name, url)
    for _, row in data.trials.iterrows():  # one column per objective and seed, each with its own values
        values = row["user_attrs"]["seed_42"]["values"]
        assert row["AP_gap_seed_42"] == values[0] and row["AP_mean_seed_42"] == values[1]
    assert len(data.intermediate) == 0  # multi-objective studies are not pruned, nothing reported
    assert set(data.trials["state"]) == {"COMPLETE"}
    _assert_pngs(str(tmp_path / "report"), text)


def test_example_grid_labels_wrap_within_their_column():
    """Column labels are never cut: they wrap between words, and a word wider than the column across lines."""
    from PIL import Image, ImageDraw

    from reports.examples import _wrap

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for text in ("adversarial perturbation", "infonce_gender_aware perturbation", "clean", "x" * 60):
        lines = _wrap(draw, text, 124)
        assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # every character kept
        assert all(draw.textlength(line) <= 124 for line in lines)
    assert _wrap(draw, "adversarial perturbation", 124) == ["adversarial perturbation"]  # was cut at 22 characters
    assert _wrap(draw, "adversarial perturbation", 80) == ["adversarial", "perturbation"]
    assert _wrap(draw, "clean", 124) == ["clean"]


def test_reference_seeds_run_the_baseline_more_often(tiny_data, tmp_path):
    """``reference_seeds``: the 7th runs its own seeds, the trials theirs; the report's null check splits the
    reference's seeds."""
    from analysis.study import load_study_data
    from reports.build import build

    url = str(tmp_path / "studies" / "journal.log")
    spec = write_spec(tmp_path, tiny_data, "refseeds", [0.2], epochs=1, baselines=["adversarial", "clean"],
                      reference_seeds=[42, 43, 44])
    _, name = prepare(spec, url)
    work(name, url, "off", heartbeat_interval=5, log=lambda m: None)
    data = load_study_data(name, url)
    assert len(data.conditions["adversarial"].runs) == 3 and len(data.conditions["trial 0"].runs) == 1
    rep = build(name, url, str(tmp_path / "report"), replicates=100, n_images=8)
    assert rep["splits"]["test"]["conditions"]["adversarial"]["runs"] == 3
    assert rep["null_check"]["halves"] == [[42], [43, 44]]
    assert rep["plan"]["half_width_now"] is None  # one seed for the trial: its seed noise is unknown
