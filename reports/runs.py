"""``faap report --runs DIR [LABEL=DIR1,DIR2 ...] --out OUT``: paired bootstrap intervals between run folders.

A run folder is a judged generator checkpoint (``faap eval --generator``) or a trained run
(``faap train``). Each argument is one condition: a folder (labelled by its name) or
``LABEL=DIR1,DIR2,...`` (several seed runs of one condition, averaged; the hierarchical
bootstrap resamples their seeds). The clean detector's condition is read from the runs'
cached clean detections (``summary.json``'s ``clean_detections[split]``).

Everything is checked before anything is written: the folders, their saved detections on the
split, and that all runs share the dataset fingerprint, detector and evaluation settings.
``report.md`` and ``report.json`` hold the same numbers; AP/AR are fractions in [0, 1].
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property

from analysis.bootstrap import bootstrap_gap
from faap.data.coco import SPLITS, fingerprint
from faap.errors import UserError
from faap.rundir import RunDir
from reports import figures
from reports.common import (CLEAN_LABEL, ORIGINAL_CLAIM, Section, claim_sentence, claim_unresolved, fmt_ci,
                            fmt_interval, fmt_signed, match_tables, run_sections, verdict_word, write_report)

CLEAN = "clean"
SUMMARY_FIELDS = ("dataset_fingerprint", "detector_id")
"""What must agree between runs, read from ``summary.json``."""
CONFIG_FIELDS = ("eval_size", "max_size", "perturb_padding")
"""Evaluation settings that must agree between runs, read from ``config.yaml`` (val adds ``eval_max_images``)."""


@dataclass
class Run:
    """One run folder, as the report reads it."""

    path: str
    config: dict
    summary: dict
    detections: str
    """``eval/{split}_detections.json.gz``."""


@dataclass
class RunsContext:
    split: str
    out_dir: str
    replicates: int
    conditions: dict[str, list[Run]]
    clean_path: str = ""
    boot: dict = field(default_factory=dict)
    """The paired bootstrap (:func:`analysis.bootstrap.bootstrap_gap`) over the clean detector and every condition."""
    notes: list[str] = field(default_factory=list)
    """Found while loading; printed at the top with the sections' own."""

    @property
    def first(self) -> Run:
        return next(iter(self.conditions.values()))[0]

    def label(self, cname: str) -> str:
        return CLEAN_LABEL if cname == CLEAN else cname

    @cached_property
    def differences(self) -> list[dict]:
        """Every reported comparison (:func:`comparisons`): ``{a, b, AP_gap, AR_gap, word}``."""
        diffs = self.boot["differences"]
        return [{"a": a, "b": b, "AP_gap": diffs[f"{a} - {b}"]["AP_gap"], "AR_gap": diffs[f"{a} - {b}"]["AR_gap"],
                 "word": verdict_word(diffs[f"{a} - {b}"]["AP_gap"])} for a, b in comparisons(self)]


def parse_runs(specs: list[str]) -> dict[str, list[str]]:
    """``DIR`` or ``LABEL=DIR1,DIR2,...`` -> {label: [dirs]}, in the order given."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        label, sep, dirs = spec.partition("=")
        paths = [d for d in dirs.split(",") if d] if sep else [spec]
        if not sep:
            label = os.path.basename(os.path.normpath(spec))
        if not label or not paths:
            raise UserError(f"--runs {spec!r}: give a run folder or LABEL=DIR1,DIR2,...")
        if label == CLEAN:
            raise UserError(f"--runs {spec!r}: the label '{CLEAN}' is the clean detector's; choose another")
        if label in out:
            raise UserError(f"--runs: the label '{label}' is given twice (name conditions with LABEL=DIR,...)")
        out[label] = paths
    return out


def read_run(path: str, split: str) -> Run:
    """A run folder's config, summary and saved detections on ``split``; one-line errors otherwise."""
    if not os.path.isdir(path):
        raise UserError(f"run folder {path} does not exist")
    run = RunDir(path)
    for name, file in (("config.yaml", run.config_path), ("summary.json", run.summary_path)):
        if not os.path.isfile(file):
            raise UserError(f"{path} is not a finished run folder (no {name})")
    config, summary = run.read_config(), run.read_summary()
    dets = run.detections_path(split)
    if split not in summary or not os.path.isfile(dets):
        raise UserError(f"{path} has no saved detections on {split} ({os.path.relpath(dets, path)}); it was "
                        f"evaluated on {', '.join(s for s in SPLITS if s in summary) or 'no split'}")
    return Run(path, config, summary, dets)


def _recorded(run: Run, key: str):
    return run.summary.get(key) if key in SUMMARY_FIELDS else run.config.get(key)


def check_same(runs: list[Run], split: str) -> None:
    """All runs were evaluated the same way: else one line naming the two folders and the field."""
    keys = SUMMARY_FIELDS + CONFIG_FIELDS + (("eval_max_images",) if split == "val" else ())
    ref = runs[0]
    for run in runs[1:]:
        for key in keys:
            a, b = _recorded(ref, key), _recorded(run, key)
            if a != b:
                raise UserError(f"{ref.path} and {run.path} differ in {key} ({a!r} vs {b!r}): their {split} "
                                "results are not comparable")


def clean_detections(ctx: RunsContext) -> str:
    """The first run's cached clean detections (noting when runs carry other files); the first that exists."""
    runs = [r for rs in ctx.conditions.values() for r in rs]
    paths = [r.summary.get("clean_detections", {}).get(ctx.split) for r in runs]
    found = [p for p in paths if p and os.path.isfile(p)]
    if not found:
        raise UserError(f"no run's clean detections on {ctx.split} exist any more (e.g. {paths[0]}); re-run "
                        f"'faap eval --run {runs[0].path} --split {ctx.split}' to recompute them")
    others = sorted({p for p in paths if p and p != found[0]})
    if others:
        ctx.notes.append(f"The runs carry {len(others) + 1} different clean-detection files for the same dataset, "
                         f"detector and settings; the clean detector's condition uses `{found[0]}` "
                         f"(others: {', '.join(f'`{p}`' for p in others)}).")
    return found[0]


def load_context(specs: list[str], out_dir: str, split: str, replicates: int) -> RunsContext:
    """Every input checked (one-line errors) and the bootstrap computed; nothing is written here."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' (use one of {', '.join(SPLITS)})")
    if replicates < 10:
        raise UserError(f"--replicates must be at least 10 (got {replicates})")
    conditions = {label: [read_run(p, split) for p in paths] for label, paths in parse_runs(specs).items()}
    ctx = RunsContext(split, out_dir, replicates, conditions)
    check_same([r for rs in conditions.values() for r in rs], split)
    data, recorded = ctx.first.config.get("data"), ctx.first.summary["dataset_fingerprint"]
    if not data or not os.path.isdir(data):
        raise UserError(f"the dataset {data} recorded in {ctx.first.path}/config.yaml is not there")
    if fingerprint(data) != recorded:
        raise UserError(f"the dataset {data} changed since the runs (fingerprint {fingerprint(data)}, runs {recorded})")
    ctx.clean_path = clean_detections(ctx)
    ctx.boot = _bootstrap(ctx)
    return ctx


def _bootstrap(ctx: RunsContext) -> dict:
    """The paired bootstrap over every condition, the clean detector first; a one-line error when the
    conditions were evaluated on different images."""
    sources = {CLEAN: [ctx.clean_path], **{c: [r.detections for r in rs] for c, rs in ctx.conditions.items()}}
    try:
        return bootstrap_gap(*match_tables(ctx.first.config["data"], ctx.split, sources), replicates=ctx.replicates)
    except ValueError as e:
        raise UserError(f"the runs cannot be paired on {ctx.split}: {e}") from None


def comparisons(ctx: RunsContext) -> list[tuple[str, str]]:
    """(a, b) pairs reported as a - b: each condition against the clean detector, then every pair (later - earlier)."""
    names = list(ctx.conditions)
    return [(c, CLEAN) for c in names] + [(b, a) for i, a in enumerate(names) for b in names[i + 1:]]


def _runs_cell(runs: list[Run]) -> str:
    seeds = [r.summary.get("seed") for r in runs]
    if all(s is None for s in seeds):
        return str(len(runs))
    return f"{len(runs)} (seed{'s' if len(runs) > 1 else ''} {', '.join(str(s) for s in seeds)})"


def conditions_section(ctx: RunsContext) -> Section:
    boot = ctx.boot
    lines = ["## Conditions", "",
             "| condition | runs (seeds) | images male / female | AP male | AP female | AP gap [95% CI] | AR gap [95% CI] |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    images = f"{boot['images']['male']} / {boot['images']['female']}"
    rows = []
    for cname, c in boot["conditions"].items():
        runs = "cached clean detections" if cname == CLEAN else _runs_cell(ctx.conditions[cname])
        lines.append(f"| {ctx.label(cname)} | {runs} | {images} | {c['AP_male']['value']:.3f} | "
                     f"{c['AP_female']['value']:.3f} | {fmt_ci(c['AP_gap'])} | {fmt_ci(c['AR_gap'])} |")
        rows.append({"label": ctx.label(cname), "value": c["AP_gap"]["value"], "ci": c["AP_gap"]["ci"]})
    fig = figures.forest(rows, ctx.out_dir, f"{ctx.split}_gaps.png", f"{ctx.split} AP gap (male - female)")
    return Section(lines + ["", f"![{ctx.split} AP gap per condition]({fig})", ""])


def differences_section(ctx: RunsContext) -> Section:
    lines = ["## Paired differences (a - b; negative: a has the smaller gap)", "",
             "| a - b | AP gap difference [95% CI] | half-width | verdict | p | AR gap difference [95% CI] |",
             "| --- | --- | --- | --- | --- | --- |"]
    rows = []
    for c in ctx.differences:
        ap, ar, name = c["AP_gap"], c["AR_gap"], f"{ctx.label(c['a'])} - {ctx.label(c['b'])}"
        lines.append(f"| {name} | {fmt_signed(ap['value'])} {fmt_interval(ap)} | {ap['half_width']:.3f} | "
                     f"**{c['word']}** | {ap['p_two_sided']:.3f} | {fmt_signed(ar['value'])} {fmt_interval(ar)} |")
        rows.append({"label": name, "value": ap["value"], "ci": ap["ci"]})
    fig = figures.forest(rows, ctx.out_dir, f"{ctx.split}_differences.png", f"{ctx.split} AP gap difference (a - b)")
    detectable = _detectable(ctx)
    return Section(lines + ["", f"![{ctx.split} AP gap differences]({fig})", ""] + detectable.lines,
                   {"comparisons": ctx.differences, **detectable.data})


def _detectable(ctx: RunsContext) -> Section:
    """Half-width of the headline comparison (the first two conditions, else the only one against clean)."""
    first = ctx.differences[len(ctx.conditions)] if len(ctx.conditions) > 1 else ctx.differences[0]
    half = first["AP_gap"]["half_width"]
    data = {"detectable_difference": {"a": first["a"], "b": first["b"], "half_width": half,
                                      "original_claim": ORIGINAL_CLAIM}}
    lost = claim_unresolved(half)
    return Section([f"Smallest difference these runs can detect on {ctx.split} (half-width of the "
                    f"{ctx.label(first['a'])} - {ctx.label(first['b'])} interval): **{half:.3f}**. {claim_sentence(half)}"
                    + (", so a change of that size cannot be told apart from noise here." if lost else ".")
                    + " A verdict \"not distinguishable\" is not evidence of no change when the interval is wider than "
                      "the change of interest.", ""], data)


def _resampling(ctx: RunsContext) -> str:
    boot = ctx.boot
    several = [c for c, rs in ctx.conditions.items() if len(rs) > 1]
    single = [c for c, rs in ctx.conditions.items() if len(rs) == 1]
    text = (f"Intervals are 95% paired bootstraps ({ctx.replicates} replicates): each replicate redraws the "
            f"{ctx.split} images ({boot['images']['male']} male and {boot['images']['female']} female), the same "
            "draw for every condition, so differences are paired over images.")
    if several:
        text += (f" Within {', '.join(several)} (several runs, averaged) each replicate also redraws the runs (seeds), "
                 "the seed part widened to a t-interval for the number of runs.")
    if single:
        text += (f" {', '.join(single)} {'has one run' if len(single) == 1 else 'have one run each'}: "
                 "images only are resampled, and seed-to-seed noise is **not** included, so "
                 "differences involving them look more certain than a rerun with another seed would confirm.")
    return text


def header(ctx: RunsContext) -> list[str]:
    first = ctx.first.summary
    return ["# Run comparison report", "",
            f"Split **{ctx.split}**; dataset `{ctx.first.config.get('data')}` (fingerprint "
            f"`{first['dataset_fingerprint']}`); detector `{first['detector_id']}`; evaluation settings "
            + ", ".join(f"{k} {ctx.first.config.get(k)}" for k in CONFIG_FIELDS) + ". AP/AR are fractions in [0, 1]; "
            "a gap is male minus female.", "", _resampling(ctx), ""]


def _command(run: Run) -> str:
    """An equivalent command, rebuilt from the recorded config (run folders do not record the command line)."""
    c, s = run.config, run.summary
    if "checkpoint_format" in s:  # judged by faap eval --generator
        sets = "".join(f" --set {k}={json.dumps(c[k])}" for k in ("eval_size", "max_size", "perturb_padding") if k in c)
        return (f"faap eval --generator {s['generator_checkpoint']} --data {c.get('data')} --detector "
                f"{c.get('detector')} --eps {s.get('eps')} --split {s.get('split')}{sets} --out {run.path}")
    return f"faap train --variant {c.get('variant')} --data {c.get('data')} --detector {c.get('detector')} " \
           f"--seed {c.get('seed')} --out {run.path}"


def provenance_section(ctx: RunsContext) -> Section:
    lines = ["## Runs", "", "Commands rebuilt from each folder's `config.yaml` and `summary.json` (the folders do "
             "not record the command line; a trained run's other settings are in its `config.yaml`):", "", "```bash"]
    found = {}
    for cname, runs in ctx.conditions.items():
        for run in runs:
            cmd = _command(run)
            found.setdefault(cname, []).append(
                {"path": run.path, "seed": run.summary.get("seed"), "eps": run.summary.get("eps"),
                 "code_commit": run.summary.get("code_commit"), "command": cmd,
                 "summary_AP_gap": run.summary[ctx.split]["AP_gap"]})
            lines.append(f"{cmd}   # {cname}")
    lines += ["```", "", f"Clean detector: `{ctx.clean_path}`.", ""]
    batches = {r.path: r.config.get("batch_size") for rs in ctx.conditions.values() for r in rs}
    notes = ()
    if len(set(batches.values())) > 1 and ctx.first.config.get("perturb_padding"):
        notes = ("The runs were evaluated with different batch sizes (" + ", ".join(
            f"{os.path.basename(p)}: {2 * b}" for p, b in batches.items()) + ") and padding perturbed: padding, "
            "and so the perturbed results, can differ slightly with the batch.",)
    return Section(lines, {"runs": found}, notes)


SECTIONS = [conditions_section, differences_section, provenance_section]
"""The report's sections, in order: each ``(ctx) -> Section`` (its warnings are the report's notes)."""


def build_runs(specs: list[str], out_dir: str, split: str = "test", replicates: int = 1000) -> dict:
    """Validate every run, bootstrap, and only then write OUT/report.md, report.json and figures/."""
    ctx = load_context(specs, out_dir, split, replicates)
    body = run_sections(SECTIONS, ctx)
    notes = ctx.notes + list(body.warnings)
    report = {"bootstrap": ctx.boot, "split": split, "dataset_fingerprint": ctx.first.summary["dataset_fingerprint"],
              "detector_id": ctx.first.summary["detector_id"], "clean_detections": ctx.clean_path,
              "settings": {k: ctx.first.config.get(k) for k in CONFIG_FIELDS}, "replicates": replicates,
              **body.data, "resampling": _resampling(ctx), "notes": notes}
    lines = header(ctx) + [f"> Note: {n}" for n in notes] + ([""] if notes else []) + body.lines
    write_report(out_dir, lines, report)
    return report
