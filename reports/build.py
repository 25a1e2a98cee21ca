"""``faap report STUDY --out DIR``: the failure report of a study, as markdown + PNG figures.

Every number comes from the study's stored records (trial values, run summaries, eval
JSON, metrics.jsonl, saved detections and checkpoints); ``report.json`` beside the
markdown holds the same numbers for machines. AP and AR are fractions in [0, 1];
differences are in the same units (not percent).

The report is a list of sections (:data:`SECTIONS`): each takes the shared
:class:`Context` and returns a :class:`reports.common.Section` (its markdown lines, its numbers
for ``report.json``, warnings printed at the top, e.g. a failed null check); sections never write
into the context, so their order only changes the markdown.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.bootstrap import bootstrap_gap, holm
from analysis.diagnostics import VIEWS, feature_diagnostics, run_features
from analysis.evidence import study_evidence
from analysis.seeds import probability_of_improvement, seed_stats
from analysis.study import load_study_data
from faap.errors import UserError
from faap.metrics import METRICS, MINIMIZE
from faap.rundir import RunDir
from faap.variants import get_variant
from reports import figures
from reports.common import (ORIGINAL_CLAIM, Section, condition_label, fmt_ci, fmt_signed, match_tables, run_sections,
                            write_report)
from reports.epochs import per_epoch_section
from reports.examples import example_grid
from reports.features import feature_space_section
from reports.verdicts import control_section, factor_section, verdict

SIZE_STATS = {"small": "AP@[0.50:0.95]_small_100", "medium": "AP@[0.50:0.95]_medium_100",
              "large": "AP@[0.50:0.95]_large_100"}


@dataclass
class Context:
    """What every section may read. Sections never write here: they return their numbers."""

    name: str
    url: str | None
    out_dir: str
    replicates: int
    n_images: int
    data: object
    trials: list
    best: object
    median: object
    ref: str
    """Reference condition of the verdict: the one the study's variant declares when the study ran it, else
    the clean detector."""
    compared: list[str]
    tables: dict = field(default_factory=dict)
    """split -> (male, female) match tables per condition (one per seed run)."""
    plan_for: float = ORIGINAL_CLAIM
    """The change the plan line sizes a study for (the original claim by default)."""
    report: dict = field(default_factory=dict)
    """The context's own numbers (study, metric, best, median, reference, the bootstrap per split), the
    start of report.json."""
    _evidence: object = field(default=None, repr=False)
    _features: dict = field(default_factory=dict, repr=False)

    @property
    def spec(self):
        return self.data.spec

    @property
    def variant(self):
        """The class of the study's variant (its hypotheses, reference and report sections)."""
        return get_variant(self.spec.variant)

    def label(self, cname: str) -> str:
        """The condition's display name (:func:`reports.common.condition_label`): a trial with its parameters."""
        cond = self.data.conditions.get(cname)
        return condition_label(cname, cond.params if cond else None)

    def evidence(self):
        """What hypothesis judges and a variant's own sections read (:class:`faap.evidence.Evidence`), built once."""
        if self._evidence is None:
            self._evidence = study_evidence(self.data, self.best, self.ref, self.compared, self.report["splits"],
                                            self.diagnostics)
        return self._evidence

    def features(self, run: str, views: tuple = ("clean", "perturbed")):
        """A run's per-image features at its selected checkpoint (``run_features``), extracted once per run for
        every section: a later request for more views extracts the union once more."""
        held = self._features.get(run)
        have = tuple(dict.fromkeys(v for f in held.features.values() for v in f)) if held else ()
        if held is None or not set(views) <= set(have):
            self._features[run] = run_features(run, n_images=self.n_images, views=tuple(dict.fromkeys(have + views)))
        return self._features[run]

    def diagnostics(self) -> dict:
        """Feature measurements of the best trial's first seed run (selected checkpoint), computed once."""
        if "diagnostics" not in self.report:
            run = self.best.runs[0]
            self.report["diagnostics"] = feature_diagnostics(run, n_images=self.n_images,
                                                             extracted=self.features(run, VIEWS))
        return self.report["diagnostics"]


def _tables(data, split: str, names: list[str]) -> tuple[dict, dict]:
    """Match tables per group for each condition (one per seed run; clean: the first run's cached detections)."""
    first = next(c for c in data.conditions.values() if c.runs).runs[0]
    sources = {name: [data.run_summary(first)["clean_detections"][split]] if name == "clean"
               else [RunDir(run).detections_path(split) for run in data.conditions[name].runs] for name in names}
    return match_tables(data.spec.data, split, sources)


def ranked_trials(data) -> list:
    """The study's completed trials, best first by its first objective in its own direction (on val)."""
    trials = [c for c in data.conditions.values() if c.kind == "trial"]
    if not trials:
        raise UserError(f"study '{data.name}' has no completed trial yet (see 'faap sweep status {data.name}')")
    lower = data.spec.objectives[0]["direction"] == MINIMIZE  # the study's own direction
    return sorted(trials, key=lambda c: c.value if lower else -c.value)


def _context(name: str, url: str | None, out_dir: str, replicates: int, n_images: int) -> Context:
    data = load_study_data(name, url)
    ranked = ranked_trials(data)
    trials = [c for c in data.conditions.values() if c.kind == "trial"]  # in trial order
    declared = get_variant(data.spec.variant).reference
    ref = declared if declared in data.conditions else "clean"
    compared = ["clean"] + ([ref] if ref != "clean" else []) + [c.name for c in trials]
    ctx = Context(name, url, out_dir, replicates, n_images, data, trials, ranked[0], ranked[len(ranked) // 2], ref,
                  compared)
    ctx.report = {"study": name, "metric": data.spec.objectives[0]["metric"], "best": ctx.best.name,
                  "median": ctx.median.name, "reference": ref, "splits": {}}
    seeds = {c: [RunDir(r).seed for r in data.conditions[c].runs] for c in compared if c != "clean"}
    for split in ("val", "test"):  # conditions that ran the same seeds are compared seed by seed
        ctx.tables[split] = _tables(data, split, compared)
        ctx.report["splits"][split] = bootstrap_gap(*ctx.tables[split], replicates=replicates, run_seeds=seeds)
    return ctx


def _header(ctx: Context) -> list[str]:
    spec, test = ctx.spec, ctx.report["splits"]["test"]
    seeds = f"{spec.seeds}" + (f" (baselines: {spec.reference_seeds})" if spec.reference_seeds != spec.seeds else "")
    return [f"# Study report: {ctx.name}", "",
            (f"{spec.description}. " if spec.description else "") + f"Variant `{spec.variant}`, {len(ctx.trials)} "
            f"completed trial(s), seeds {seeds}; dataset `{spec.data}` (fingerprint "
            f"`{ctx.data.clean.get('fingerprint', '?')}`), detector `{spec.detector}`. Epochs are selected on **val**; "
            "**test** is evaluated once per run. AP/AR are fractions in [0, 1]. Intervals are 95% hierarchical paired "
            f"bootstraps ({ctx.replicates} replicates): each replicate redraws the images ({test['images']['male']} male "
            f"and {test['images']['female']} female on test, the same draw for every condition) and, within each "
            "condition, its seeds (the seed part widened to a t-interval for the number of seeds); a condition's "
            "value is the mean over its seeds.", ""]


def comparison_table(ctx: Context) -> Section:
    lines = [f"## Clean detector, {'' if ctx.ref == 'clean' else ctx.label(ctx.ref) + ' baseline '}and the variant", "",
             "| condition | split | seeds | AP male | AP female | AP gap [95% CI] | AR gap [95% CI] |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    show = [(c, ctx.label(c)) for c in dict.fromkeys(["clean", ctx.ref])] + \
        [(c.name, f"{role}: {ctx.label(c.name)}") for c, role in ((ctx.best, "best"), (ctx.median, "median"))]
    for cname, label in show:
        for split in ("val", "test"):
            c = ctx.report["splits"][split]["conditions"][cname]
            runs = "-" if cname == "clean" else str(c["runs"])
            lines.append(f"| {label} | {split} | {runs} | {c['AP_male']['value']:.3f} | {c['AP_female']['value']:.3f} | "
                         f"{fmt_ci(c['AP_gap'])} | {fmt_ci(c['AR_gap'])} |")
    rows = [{"label": ctx.label(cname), "value": ctx.report["splits"]["test"]["conditions"][cname]["AP_gap"]["value"],
             "ci": ctx.report["splits"]["test"]["conditions"][cname]["AP_gap"]["ci"]} for cname in ctx.compared]
    fig = figures.forest(rows, ctx.out_dir, "test_gaps.png", "test AP gap (male - female)")
    return Section(lines + ["", f"![test AP gap per condition]({fig})", ""])


def seeds_section(ctx: Context) -> Section:
    data, lower = ctx.data, METRICS["AP_gap"].lower_is_better  # the values compared are test AP gaps
    per_seed = {c: [data.run_summary(r)["test"]["AP_gap"] for r in data.conditions[c].runs]
                for c in ctx.compared if c != "clean"}
    lines = ["## Across seeds (test AP gap of each seed's run)", "",
             f"| condition | seeds | mean [95% t-CI] | IQM | P(better than {ctx.label(ctx.ref)}) |",
             "| --- | --- | --- | --- | --- |"]
    found = {"seeds": {}}
    for c, vals in per_seed.items():
        s = seed_stats(vals)
        poi = probability_of_improvement(vals, per_seed.get(ctx.ref, []), lower)
        found["seeds"][c] = {**s, "values": vals, "p_improvement_vs_reference": poi}
        ci = "n/a" if not np.isfinite(s["ci"][0]) else f"{s['ci'][0]:.3f}, {s['ci'][1]:.3f}"
        lines.append(f"| {ctx.label(c)} | {s['n']} | {s['mean']:.3f} [{ci}] | {s['iqm']:.3f} | "
                     f"{'-' if c == ctx.ref else f'{poi:.2f}'} |")
    if ctx.ref != "clean" and len(ctx.trials) > 1:
        diffs, ref = ctx.report["splits"]["test"]["differences"], ctx.ref
        pvals = {c.name: diffs[f"{c.name} - {ref}"]["AP_gap"]["p_two_sided"] for c in ctx.trials}
        adj = found["holm"] = holm(pvals)
        lines += ["", f"Every trial against the {ctx.label(ref)} on test (AP gap difference, bootstrap p, Holm-adjusted "
                  f"over {len(ctx.trials)} comparisons): " + "; ".join(
                      f"{ctx.label(c)}: {fmt_signed(diffs[f'{c} - {ref}']['AP_gap']['value'])}, p {pvals[c]:.3f} -> "
                      f"{adj[c]:.3f}"
                      for c in pvals) + "."]
    return Section(lines + [""], found)


def curves_section(ctx: Context) -> Section:
    clean_val_gap = ctx.data.clean.get("val", {}).get("AP_gap")
    epochs, ref = ctx.data.epochs, ctx.label(ctx.ref)
    if len(epochs):  # each condition by its display name in the legend
        epochs = epochs.assign(condition=epochs["condition"].map(ctx.label))
    gap = figures.curves(epochs, clean_val_gap, ctx.out_dir, highlight=ref)
    score = figures.curves(epochs, None, ctx.out_dir, "matched_score_gap", "matched_score_gap.png", ref)
    return Section(["## Per-epoch curves (validation)", "", f"![val AP gap per epoch]({gap})", "",
                    f"![matched-score gap per epoch]({score})", ""])


def params_section(ctx: Context) -> Section:
    data, metric = ctx.data, ctx.report["metric"]
    params = [p.name for p in ctx.spec.params]
    seed_cols = [c for c in data.trials.columns if c.startswith(f"{metric}_seed_")]
    done = data.trials[data.trials["state"] == "COMPLETE"]
    lines = ["## Hyperparameter effects", "",
             f"![objective vs parameters]({figures.param_effects(done, params, metric, seed_cols, ctx.out_dir)})", ""]
    plots = _optuna_plots(ctx, params, len(done))
    lines += plots.lines
    if len(params) > 1 and len(done) >= 4:
        importances = _importances(data.study)
        lines += [f"- {label} importances: " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items())
                  for label, imp in importances.items()]
        return Section(lines + [""], {**plots.data, "importances": importances})
    lines.append(f"(Importances need at least two parameters and four completed trials; this study has "
                 f"{len(params)} and {len(done)}.)")
    return Section(lines + [""], plots.data)


def _optuna_plots(ctx: Context, params: list[str], n_done: int) -> Section:
    """Optuna's parallel coordinates (two parameters or more) and Pareto front (two objectives or more)."""
    import optuna

    lines, found = [], {}
    with warnings.catch_warnings():  # optuna's matplotlib plots are marked experimental
        warnings.simplefilter("ignore")
        if len(params) > 1 and n_done >= 2:
            ax = optuna.visualization.matplotlib.plot_parallel_coordinate(ctx.data.study, params=params)
            lines += [f"![parallel coordinates]({figures.save_axes(ax, ctx.out_dir, 'parallel.png')})", ""]
        if len(ctx.spec.objectives) > 1 and n_done >= 2:
            ax = optuna.visualization.matplotlib.plot_pareto_front(ctx.data.study)
            front = found["pareto_front"] = sorted(t.number for t in ctx.data.study.best_trials)
            lines += [f"Pareto front ({' vs '.join(o['metric'] for o in ctx.spec.objectives)}, val): trials {front}.", "",
                      f"![Pareto front]({figures.save_axes(ax, ctx.out_dir, 'pareto.png')})", ""]
    return Section(lines, found)


def _importances(study) -> dict:
    """Parameter importances by fANOVA and PED-ANOVA: {method: {param: importance}}."""
    import optuna

    evaluators = (("fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)),
                  ("PED-ANOVA", optuna.importance.PedAnovaImportanceEvaluator()))
    return {label: optuna.importance.get_param_importances(study, evaluator=e) for label, e in evaluators}


def hypotheses_section(ctx: Context) -> Section:
    """The failure hypotheses the study's variant declares, each measured and judged by its rule."""
    variant, found = ctx.variant, {}
    lines = ["## Why did it fail? Each hypothesis, measured", ""]
    if not variant.hypotheses:
        return Section(lines + [f"Variant `{variant.name}` declares no failure hypotheses, so none is measured "
                                "here (a variant lists them in its `hypotheses`).", ""], {"hypotheses": found})
    evidence = ctx.evidence()
    for i, h in enumerate(variant.hypotheses, 1):
        f = h.judge(evidence)
        found[h.key] = {"verdict": f.verdict, "text": f.text, **f.stats}
        rule = f"{h.rule}; {f.where}" if f.where else h.rule
        lines += [f"{i}. **{h.title}: {f.verdict}.** {f.text}. (Rule: {rule}.)", ""]
        if f.figure is not None:
            lines += [f"   ![{h.title}]({figures.draw(f.figure, ctx.out_dir)})", ""]
    return Section(lines, {"hypotheses": found})


def other_section(ctx: Context) -> Section:
    data, ref, best = ctx.data, ctx.ref, ctx.best
    shift = ctx.diagnostics()["feature_shift"]
    test = ctx.report["splits"]["test"]["conditions"]
    lines = ["## Other measurements", "",
             f"- The perturbation moves pooled decoder features by {shift['female']:.3f} (female) and "
             f"{shift['male']:.3f} (male) of their norm ({ctx.label(best.name)}, first seed run).",
             f"- AR gap vs AP gap on test: {ctx.label(ref)} AR gap {fmt_ci(test[ref]['AR_gap'])} vs AP gap "
             f"{fmt_ci(test[ref]['AP_gap'])}; {ctx.label(best.name)} AR gap {fmt_ci(test[best.name]['AR_gap'])} vs "
             f"AP gap {fmt_ci(test[best.name]['AP_gap'])}."]
    sizes = {}
    for cname in ("clean", ref, best.name):
        run = RunDir(data.conditions[cname].runs[0] if cname != "clean" else best.runs[0])
        ev = run.read_eval("test", run.selected_epoch())["details"]["baseline" if cname == "clean" else "perturbed"]
        sizes[cname] = {f"{g} {s}": ev[g][k] if ev[g][k] is not None else float("nan")
                        for g in ("female", "male") for s, k in SIZE_STATS.items()}
    bars = figures.bars({ctx.label(c): v for c, v in sizes.items()}, "test AP (first seed run)", ctx.out_dir,
                        "ap_by_size.png")
    lines += ["", f"![AP by object size]({bars})", ""]
    shown = {ctx.label(c): data.conditions[c].runs[0] for c in (ref, best.name) if c != "clean"}
    grid = example_grid(shown, os.path.join(ctx.out_dir, "figures", "examples.png"))
    lines += ["Validation examples per group (green: ground truth; red: detections with score >= 0.5; perturbation "
              "shown from -eps (black) to +eps (white)), first seed run of each condition:", "",
              f"![examples]({os.path.relpath(grid, ctx.out_dir)})", ""]
    return Section(lines, {"ap_by_size": sizes})


def reproduce_section(ctx: Context) -> Section:
    summary = ctx.data.run_summary(ctx.best.runs[0])
    source = ctx.data.study.user_attrs.get("spec_source") or "SPEC"
    return Section(["## Reproduce", "", "```bash",
                    f"faap sweep run {source}" + (f" --storage {ctx.url}" if ctx.url else ""),
                    f"faap sweep status {ctx.name}", f"faap report {ctx.name} --out {ctx.out_dir}", "```", "",
                    f"- code commit `{summary['code_commit']}`; dataset fingerprint `{summary['dataset_fingerprint']}`; "
                    f"detector `{summary['detector_id']}`; seeds {ctx.spec.seeds}, baselines' {ctx.spec.reference_seeds}; epochs selected on val "
                    f"({summary['select_metric']}), test evaluated once per run.", ""])


SECTIONS = [verdict, control_section, factor_section, comparison_table, seeds_section, curves_section,
            per_epoch_section, params_section, hypotheses_section, feature_space_section, other_section,
            reproduce_section]
"""The report's sections, in order: each ``(ctx) -> Section``; the study's variant adds its own
``report_sections`` before the last (see :func:`sections`), each ``(evidence) -> (lines, data)``."""


def _variant_section(section):
    """A variant's own section reads the study's evidence (``faap.evidence.Evidence``), never the report's
    context; it returns ``(markdown lines, {report.json key: numbers})``."""
    def run(ctx: Context) -> Section:
        return Section(*section(ctx.evidence()))

    run.__name__ = section.__name__
    run.variant_section = section
    return run


def sections(variant) -> list:
    """The sections of a report on a study of ``variant``: SECTIONS, its own before 'Reproduce'."""
    return [*SECTIONS[:-1], *map(_variant_section, variant.report_sections), SECTIONS[-1]]


def build(name: str, url: str | None, out_dir: str, replicates: int = 1000, n_images: int = 64,
          plan_for: float = ORIGINAL_CLAIM) -> dict:
    """Load and check the study (nothing is written when it is refused), then write the report."""
    if not plan_for > 0:
        raise UserError(f"--plan-for must be a positive change in AP gap (got {plan_for})")
    ctx = _context(name, url, out_dir, replicates, n_images)
    ctx.plan_for = plan_for
    body = run_sections(sections(ctx.variant), ctx)
    report = {**ctx.report, **body.data, "warnings": list(body.warnings)}
    write_report(out_dir, _header(ctx) + [w for warning in body.warnings for w in (warning, "")] + body.lines, report)
    return report
