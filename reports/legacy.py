"""``faap report --legacy PATH --out DIR``: the original codebase's comparison tables, rebuilt from its files.

It lists every evaluation file (run, split, epoch, eps, clean and perturbed AP/AR per group,
gaps) and warns where comparisons cannot be trusted: files without a baseline of their own,
and baselines that differ between files by more than rerun noise (different splits or
settings: the 60/20/20 split of the original claim, :data:`reports.common.ORIGINAL_GAP`, and
the later 80/10/10 re-split give different clean AP gaps).

Like the study report it is a list of sections (:data:`SECTIONS`, each ``(ctx) -> Section``);
the numbers come from :mod:`analysis.legacy`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from analysis.legacy import baseline_clusters, eval_rows, layout_counts, load, loss_curves
from reports import figures
from reports.common import Section, fmt_plain, run_sections, write_report


@dataclass
class LegacyContext:
    path: str
    out_dir: str
    frame: pd.DataFrame
    """:func:`analysis.legacy.load` of ``path``."""

    @cached_property
    def rows(self) -> list[dict]:
        return eval_rows(self.frame)

    @cached_property
    def clusters(self) -> list[dict]:
        return baseline_clusters(self.rows)

    @property
    def splits(self) -> set:
        """The splits the files name (a file that names none is warned about and tabled apart)."""
        return {r["split"] for r in self.rows if not _missing(r["split"])}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def warnings_found(ctx: LegacyContext) -> list[str]:
    """Where the files' comparisons cannot be trusted: several baselines on a split, files without a
    baseline or a split, results on several splits."""
    found = []
    for split in sorted({c["split"] for c in ctx.clusters if not _missing(c["split"])}):
        same = [c for c in ctx.clusters if c["split"] == split]
        if len(same) > 1:
            found.append(f"{len(same)} different clean baselines on {split} (AP gap " + ", ".join(
                f"{c['gap']:.4f} in " + ", ".join(f"`{f}`" for f in c["files"]) for c in same) + "): these files come "
                "from different splits or settings; compare each run only with the baseline of its own file.")
    for r in ctx.rows:
        if not r["has_baseline"]:
            found.append(f"`{r['source']}` has no baseline of its own (perturbed-only): its gap "
                         f"{fmt_plain(r.get('perturbed_AP_gap'))} cannot be compared with a clean gap from another file.")
        if _missing(r["split"]):
            found.append(f"`{r['source']}` does not say which split it is on.")
    if len(ctx.splits) > 1:
        found.append(f"results on several splits ({', '.join(sorted(map(str, ctx.splits)))}): a val result and a test "
                     "result are never compared in the tables below.")
    return found


def header(ctx: LegacyContext) -> list[str]:
    return [f"# Legacy results: {os.path.basename(os.path.normpath(ctx.path))}", "",
            f"Rebuilt from {ctx.frame['source'].nunique()} files under `{ctx.path}`; every number below is copied from "
            "the file named in its row. AP/AR are fractions in [0, 1]; gaps are male minus female.", ""]


def problems_section(ctx: LegacyContext) -> Section:
    problems = ctx.frame.attrs["problems"]
    lines = ["## Files that could not be read", ""] + [f"- `{f}`: {why}" for f, why in problems] + [""]
    return Section(lines if problems else [], {"problems": problems})


def warnings_section(ctx: LegacyContext) -> Section:
    found = warnings_found(ctx)
    return Section(["## Warnings", ""] + ([f"- {w}" for w in found] or ["- none"]) + [""],
                   {"warnings": found, "baselines": ctx.clusters})


def layout_section(ctx: LegacyContext) -> Section:
    counts = layout_counts(ctx.frame)
    if counts.empty:
        return Section([])
    total = counts.sum().sum()
    lines = ["## Dataset layout (dataset_layout.json)", "", "| split | female | male | share |", "| --- | --- | --- | --- |"]
    for split in ("train", "val", "test"):
        if split in counts.index:
            lines.append(f"| {split} | {int(counts.loc[split, 'female'])} | {int(counts.loc[split, 'male'])} | "
                         f"{counts.loc[split].sum() / total:.2f} |")
    return Section(lines + [""])


def _cell(r: dict, *keys: str) -> str:
    return " / ".join(fmt_plain(r.get(k)) for k in keys)


def _row(r: dict) -> str:
    cells = [f"`{r['source']}`", r["run"], "-" if r["epoch"] is None else r["epoch"], _cell(r, "epsilon"),
             _cell(r, "baseline_AP_male", "baseline_AP_female"), _cell(r, "baseline_AP_gap"),
             _cell(r, "perturbed_AP_male", "perturbed_AP_female"), _cell(r, "perturbed_AP_gap"),
             _cell(r, "AP_gap_change"), _cell(r, "baseline_AR_gap"), _cell(r, "perturbed_AR_gap")]
    return "| " + " | ".join(map(str, cells)) + " |"


def evaluations_section(ctx: LegacyContext) -> Section:
    """One table per split (a val and a test result never side by side); every file's row in report.json."""
    lines = []
    unknown = [r for r in ctx.rows if _missing(r["split"])]
    tables = [(f"on {split}", [r for r in ctx.rows if r["split"] == split]) for split in sorted(ctx.splits)]
    for title, rows in tables + ([("whose split the file does not name", unknown)] if unknown else []):
        lines += [f"## Evaluations {title}", "",
                  "| file | run | epoch | eps | clean AP m / f | clean AP gap | perturbed AP m / f | perturbed AP gap | "
                  "AP gap change | clean AR gap | perturbed AR gap |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_row(r) for r in rows] + [""]
    lines += ["No confidence intervals are possible here: the original files hold aggregate AP/AR only (no "
              "detections, one seed). Changes smaller than the clean baseline's own spread between reruns (about "
              ".0005 AP) are not evidence of an effect.", ""]
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in ctx.rows]
    return Section(lines, {"rows": rows})


def training_section(ctx: LegacyContext) -> Section:
    curves = loss_curves(ctx.frame)
    if not curves:
        return Section([])
    paths = {run: figures.curves(epochs, None, ctx.out_dir, "loss", f"train_{run}.png") for run, epochs in curves.items()}
    return Section(["## Training logs", ""] + [f"![{run}]({p})" for run, p in paths.items()] + [""])


SECTIONS = [problems_section, warnings_section, layout_section, evaluations_section, training_section]
"""The report's sections, in order: each ``(ctx) -> Section``."""


def build(path: str, out_dir: str) -> dict:
    """Read every file under ``path`` (a missing folder is refused before anything is written), then write
    OUT/report.md, report.json and figures/."""
    ctx = LegacyContext(path, out_dir, load(path))
    body = run_sections(SECTIONS, ctx)
    write_report(out_dir, header(ctx) + body.lines, body.data)
    return body.data
