"""``faap report STUDY --out DIR``: the failure report of a study, as markdown + PNG figures.

Every number comes from the study's stored records (trial values, run summaries, eval
JSON, metrics.jsonl, saved detections and checkpoints); ``report.json`` beside the
markdown holds the same numbers for machines. AP and AR are fractions in [0, 1];
differences are in the same units (not percent).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

from analysis.bootstrap import bootstrap_gap, holm, match_table
from analysis.diagnostics import feature_diagnostics, h1_verdict, h2_points, h2_verdict, h3_verdict
from analysis.seeds import probability_of_improvement, seed_stats
from analysis.study import load_study_data
from faap.data.coco import load_split
from faap.evaluate import read_detections
from reports import figures
from reports.examples import example_grid

SIZE_STATS = {"small": "AP@[0.50:0.95]_small_100", "medium": "AP@[0.50:0.95]_medium_100",
              "large": "AP@[0.50:0.95]_large_100"}


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    text = f"{v:+.{digits}f}"
    return text.replace("-", "+") if float(text) == 0 else text  # no "-0.000"


def _ci(entry, digits=3):
    lo, hi = entry["ci"]
    return f"{entry['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _tables(data, split: str, names: list[str]) -> tuple[dict, dict]:
    """Match tables per group for each condition (one per seed run; clean: the cached detections)."""
    groups = load_split(data.spec.data, split)
    male, female = {}, {}
    for name in names:
        cond = data.conditions[name]
        runs = cond.runs if name != "clean" else [next(c for c in data.conditions.values() if c.runs).runs[0]]
        for run in runs:
            if name == "clean":
                path = data.run_summary(run)["clean_detections"][split]
            else:
                path = os.path.join(run, "eval", f"{split}_detections.json.gz")
            saved = read_detections(path)
            for group, store in (("male", male), ("female", female)):
                table = match_table(groups[group].coco, saved["detections"][group], saved["image_ids"][group])
                store.setdefault(name, []).append(table)
    return male, female


def _verdict_word(diff: dict) -> str:
    lo, hi = diff["ci"]
    if lo > 0:
        return "worse (larger gap)"
    if hi < 0:
        return "better (smaller gap)"
    return "not distinguishable"


def build(name: str, url: str | None, out_dir: str, replicates: int = 1000, n_images: int = 64) -> dict:
    data = load_study_data(name, url)
    spec, metric = data.spec, data.spec.objectives[0]["metric"]
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    trials = [c for c in data.conditions.values() if c.kind == "trial"]
    if not trials:
        from faap.errors import UserError

        raise UserError(f"study '{name}' has no completed trial yet (see 'faap sweep status {name}')")
    lower = spec.objectives[0]["direction"] == "minimize"
    ranked = sorted(trials, key=lambda c: c.value if lower else -c.value)
    best, median = ranked[0], ranked[len(ranked) // 2]
    compared = ["clean"] + [b for b in ("adversarial",) if b in data.conditions] + [c.name for c in trials]
    report = {"study": name, "metric": metric, "best": best.name, "median": median.name, "splits": {}}
    for split in ("val", "test"):
        male, female = _tables(data, split, compared)
        report["splits"][split] = bootstrap_gap(male, female, replicates=replicates)
    ref = "adversarial" if "adversarial" in data.conditions else "clean"
    lines = [f"# Study report: {name}", "",
             (f"{spec.description}. " if spec.description else "") + f"Variant `{spec.variant}`, {len(trials)} completed trial(s), seeds "
             f"{spec.seeds}; dataset `{spec.data}` (fingerprint `{data.clean.get('fingerprint', '?')}`), detector "
             f"`{spec.detector}`. Epochs are selected on **val**; **test** is evaluated once per run. AP/AR are "
             f"fractions in [0, 1]; intervals are 95% paired bootstraps over images ({replicates} replicates), each "
             "condition averaged over its seeds.", ""]
    # ---- verdict ---------------------------------------------------------------------------------
    lines += ["## Verdict", ""]
    for split in ("val", "test"):
        r = report["splits"][split]
        d = r["differences"][f"{best.name} - {ref}"]["AP_gap"]
        lines.append(f"- **{split}**: best {spec.variant} trial ({best.name}, {best.params}) AP gap "
                     f"{r['conditions'][best.name]['AP_gap']['value']:.3f} vs {ref} "
                     f"{r['conditions'][ref]['AP_gap']['value']:.3f}: difference {_fmt(d['value'])}, 95% CI "
                     f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] -> **{_verdict_word(d)}**.")
        report[f"verdict_{split}"] = {"difference": d, "word": _verdict_word(d)}
    lines += ["", "The best trial is picked by its validation value, so its val comparison is optimistic; the "
              "test comparison is the one to trust.", ""]
    # ---- table -----------------------------------------------------------------------------------
    lines += ["## Clean detector, 7th baseline and the variant", "",
              "| condition | split | seeds | AP male | AP female | AP gap [95% CI] | AR gap [95% CI] |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    show = [("clean", "clean detector")] + ([("adversarial", "7th (adversarial)")] if ref == "adversarial" else []) + \
        [(best.name, f"best: {best.name}"), (median.name, f"median: {median.name}")]
    for cname, label in show:
        for split in ("val", "test"):
            c = report["splits"][split]["conditions"][cname]
            runs = "-" if cname == "clean" else str(c["runs"])
            lines.append(f"| {label} | {split} | {runs} | {c['AP_male']['value']:.3f} | {c['AP_female']['value']:.3f} | "
                         f"{_ci(c['AP_gap'])} | {_ci(c['AR_gap'])} |")
    rows = [{"label": cname if cname != "clean" else "clean detector",
             "value": report["splits"]["test"]["conditions"][cname]["AP_gap"]["value"],
             "ci": report["splits"]["test"]["conditions"][cname]["AP_gap"]["ci"]} for cname in compared]
    lines += ["", f"![test AP gap per condition]({figures.forest(rows, out_dir, 'test_gaps.png', 'test AP gap (male - female)')})", ""]
    # ---- seeds and many comparisons -------------------------------------------------------------------
    per_seed = {c: [data.run_summary(r)["test"]["AP_gap"] for r in data.conditions[c].runs] for c in compared if c != "clean"}
    lines += ["## Across seeds (test AP gap of each seed's run)", "",
              "| condition | seeds | mean [95% t-CI] | IQM | P(better than 7th) |", "| --- | --- | --- | --- | --- |"]
    report["seeds"] = {}
    for c, vals in per_seed.items():
        s = seed_stats(vals)
        poi = probability_of_improvement(vals, per_seed.get("adversarial", []), lower)
        report["seeds"][c] = {**s, "values": vals, "p_improvement_vs_7th": poi}
        ci = "n/a" if not np.isfinite(s["ci"][0]) else f"{s['ci'][0]:.3f}, {s['ci'][1]:.3f}"
        lines.append(f"| {c} | {s['n']} | {s['mean']:.3f} [{ci}] | {s['iqm']:.3f} | "
                     f"{'-' if c == 'adversarial' else f'{poi:.2f}'} |")
    if ref == "adversarial" and len(trials) > 1:
        pvals = {c.name: report["splits"]["test"]["differences"][f"{c.name} - adversarial"]["AP_gap"]["p_two_sided"]
                 for c in trials}
        adj = holm(pvals)
        report["holm"] = adj
        lines += ["", f"Every trial against the 7th on test (AP gap difference, bootstrap p, Holm-adjusted over "
                  f"{len(trials)} comparisons): " + "; ".join(
                      f"{c}: {_fmt(report['splits']['test']['differences'][f'{c} - adversarial']['AP_gap']['value'])}, "
                      f"p {pvals[c]:.3f} -> {adj[c]:.3f}" for c in pvals) + "."]
    # ---- curves and parameters ------------------------------------------------------------------------
    clean_val_gap = data.clean.get("val", {}).get("AP_gap")
    lines += ["", "## Per-epoch curves (validation)", "",
              f"![val AP gap per epoch]({figures.curves(data.epochs, clean_val_gap, out_dir)})", "",
              f"![matched-score gap per epoch]({figures.curves(data.epochs, None, out_dir, 'matched_score_gap', 'matched_score_gap.png')})", ""]
    params = [p.name for p in spec.params]
    seed_cols = [c for c in data.trials.columns if c.startswith(f"{metric}_seed_")]
    done = data.trials[data.trials["state"] == "COMPLETE"]
    lines += ["## Hyperparameter effects", "",
              f"![objective vs parameters]({figures.param_effects(done, params, metric, seed_cols, out_dir)})", ""]
    import optuna

    with warnings.catch_warnings():  # optuna's matplotlib plots are marked experimental
        warnings.simplefilter("ignore")
        if len(params) > 1 and len(done) >= 2:
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(data.study, params=params)
            lines += [f"![parallel coordinates]({figures.save_axes(ax, out_dir, 'parallel.png')})", ""]
        if len(spec.objectives) > 1 and len(done) >= 2:
            ax = optuna.visualization.matplotlib.plot_pareto_front(data.study)
            front = sorted(t.number for t in data.study.best_trials)
            report["pareto_front"] = front
            lines += [f"Pareto front ({' vs '.join(o['metric'] for o in spec.objectives)}, val): trials {front}.", "",
                      f"![Pareto front]({figures.save_axes(ax, out_dir, 'pareto.png')})", ""]
    if len(params) > 1 and len(done) >= 4:
        for label, evaluator in (("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)),
                                 ("PED-ANOVA", optuna.importance.PedAnovaImportanceEvaluator())):
            imp = optuna.importance.get_param_importances(data.study, evaluator=evaluator)
            report.setdefault("importances", {})[label] = imp
            lines.append(f"- {label} importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
    else:
        lines.append(f"(Importances need at least two parameters and four completed trials; this study has "
                     f"{len(params)} and {len(done)}.)")
    lines += [""]
    # ---- hypotheses -----------------------------------------------------------------------------------
    lines += ["## Why did it fail? Each hypothesis, measured", ""]
    diag = feature_diagnostics(best.runs[0], n_images=n_images)
    report["diagnostics"] = diag
    v1, t1 = h1_verdict(diag)
    pts = h2_points(data.epochs[data.epochs["condition"].str.startswith("trial")], clean_val_gap or 0.0)
    v2, t2, s2 = h2_verdict(pts)
    v3, t3 = h3_verdict(diag)
    report["hypotheses"] = {"h1": {"verdict": v1, "text": t1}, "h2": {"verdict": v2, "text": t2, **s2},
                            "h3": {"verdict": v3, "text": t3}}
    h2_fig = figures.scatter(pts if len(pts) else np.zeros((0, 2)), "InfoNCE loss drop since epoch 0",
                             "val AP gap minus clean", out_dir, "h2_loss_vs_gap.png")
    sims = {k: diag[f"h1_features_{k}"] for k in ("before", "after")}
    h1_fig = figures.bars({k: {"two views": v["two_views"], "same group": v["same_group"],
                               "cross group": v["cross_group"]} for k, v in sims.items()},
                          "mean cosine similarity", out_dir, "h1_similarity.png")
    lines += [f"1. **No semantic relation between cross-gender positives: {v1}.** {t1}. (Rule: supported when real "
              f"views are more than 0.05 more alike than cross-gender pairs and those are no more alike than two "
              f"same-group images; {diag['n_images']['female']} female and {diag['n_images']['male']} male validation "
              f"images, run {best.name} {os.path.basename(best.runs[0])}.)", "", f"   ![similarities]({h1_fig})", "",
              f"2. **Objective not tied to the goal: {v2}.** {t2}. (Rule: not supported only when the interval is "
              f"entirely below zero.)", "", f"   ![loss drop vs gap change]({h2_fig})", "",
              f"3. **Collapse: {v3}.** {t3}. (Rule: supported when the effective rank drops by more than 10% or the "
              f"projections' uniformity rises by more than 0.1.)", ""]
    # ---- other observations -------------------------------------------------------------------------
    shift = diag["feature_shift"]
    test = report["splits"]["test"]["conditions"]
    lines += ["## Other measurements", "",
              f"- The perturbation moves pooled decoder features by {shift['female']:.3f} (female) and "
              f"{shift['male']:.3f} (male) of their norm (run {best.name}).",
              f"- AR gap vs AP gap on test: 7th AR gap {_ci(test[ref]['AR_gap'])} vs AP gap {_ci(test[ref]['AP_gap'])}; "
              f"{best.name} AR gap {_ci(test[best.name]['AR_gap'])} vs AP gap {_ci(test[best.name]['AP_gap'])}."]
    sizes = {}
    for cname in ("clean", ref, best.name):
        run = data.conditions[cname].runs[0] if cname != "clean" else best.runs[0]
        with open(os.path.join(run, "eval", f"test_epoch_{data.run_summary(run)['selected_epoch']:04d}.json")) as f:
            ev = json.load(f)["details"]["baseline" if cname == "clean" else "perturbed"]
        sizes[cname] = {f"{g} {s}": ev[g][k] if ev[g][k] is not None else float("nan")
                        for g in ("female", "male") for s, k in SIZE_STATS.items()}
    report["ap_by_size"] = sizes
    lines += ["", f"![AP by object size]({figures.bars(sizes, 'test AP (first seed run)', out_dir, 'ap_by_size.png')})", ""]
    shown = {c: data.conditions[c].runs[0] for c in (ref, best.name) if c != "clean"}
    grid = example_grid(shown, os.path.join(out_dir, "figures", "examples.png"))
    lines += ["Validation examples per group (green: ground truth; red: detections with score >= 0.5; perturbation "
              "shown from -eps (black) to +eps (white)), first seed run of each condition:", "",
              f"![examples]({os.path.relpath(grid, out_dir)})", ""]
    # ---- reproduce -------------------------------------------------------------------------------------
    summary = data.run_summary(best.runs[0])
    source = data.study.user_attrs.get("spec_source") or "SPEC"
    lines += ["## Reproduce", "", "```bash", f"faap sweep run {source}"
              + (f" --storage {url}" if url else ""), f"faap sweep status {name}", f"faap report {name} --out {out_dir}",
              "```", "", f"- code commit `{summary['code_commit']}`; dataset fingerprint `{summary['dataset_fingerprint']}`; "
              f"detector `{summary['detector_id']}`; seeds {spec.seeds}; epochs selected on val "
              f"({summary['select_metric']}), test evaluated once per run.", ""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    return report
