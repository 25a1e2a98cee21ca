"""What the three reports share: number formatting, verdict words, the original study's claim, match
tables from saved detections, the section convention, and writing ``report.md`` with ``report.json``.

A report is a header plus a list of sections. A section is a function ``(ctx) -> Section`` (or the plain
pair ``(lines, data)``, which a variant's own sections return without importing this package): its
markdown lines, the numbers it adds to ``report.json`` and warnings for the top of the report. Sections
never write into the context, so their order changes only the markdown; a section that needs numbers
another one shows asks the context (whose results are computed once), never the other section.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import numpy as np

from analysis.bootstrap import match_table
from faap.data.coco import load_split
from faap.evaluate import read_detections
from faap.variants import VARIANTS

CLEAN_LABEL = "clean detector"
"""How every report names the condition 'clean' (the unperturbed detector)."""
ORIGINAL_GAP = (0.106, 0.110)
"""The original study's headline: the clean detector's test AP gap (its 60/20/20 split), then the gap with
its perturbation."""
ORIGINAL_CLAIM = round(ORIGINAL_GAP[1] - ORIGINAL_GAP[0], 3)
"""Size of the original study's headline change, the scale a study must resolve."""


def fmt_param(value) -> str:
    """A hyperparameter's value as people read it: ``0.05``, ``0.000123`` (3 significant digits), ``True``."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def condition_label(cname: str, params: dict | None = None, variant: str | None = None) -> str:
    """The one display name of a condition in every report, table and figure: the clean detector, a
    baseline variant's label (``7th (adversarial)``), or a trial by its number *and* its parameters,
    ``trial 2 (temperature 0.5)``; ``variant`` prefixes the trial's variant (``infonce trial 2 (...)``),
    for tables that mix studies."""
    if cname == "clean":
        return CLEAN_LABEL
    if cname in VARIANTS:
        return VARIANTS[cname].label or cname
    name = f"{variant} {cname}" if variant else cname
    if not params:
        return name
    return f"{name} ({', '.join(f'{k} {fmt_param(v)}' for k, v in params.items())})"


def claim_sentence(half_width: float) -> str:
    """The original claim set against the half-width of an interval (the smallest detectable difference),
    without the closing full stop."""
    before, after = (f"{g:.3f}".lstrip("0") for g in ORIGINAL_GAP)
    scale = "smaller" if claim_unresolved(half_width) else "larger"
    return f"The original study's claimed change (AP gap {before} -> {after}, {ORIGINAL_CLAIM:.3f}) is {scale} than that"


def claim_unresolved(half_width: float) -> bool:
    """Whether a change the size of the original claim is lost in an interval of this half-width."""
    return ORIGINAL_CLAIM < half_width


def fmt_signed(v, digits: int = 3) -> str:
    """``+0.012`` / ``-0.004``; ``n/a`` for a missing or infinite value; never ``-0.000``."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    text = f"{v:+.{digits}f}"
    return text.replace("-", "+") if float(text) == 0 else text


def fmt_ci(entry: dict, digits: int = 3) -> str:
    """A value with its interval, unsigned: ``0.412 [0.380, 0.441]`` (``entry``: ``{value, ci}``)."""
    lo, hi = entry["ci"]
    return f"{entry['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_interval(entry: dict) -> str:
    """A difference's interval, signed: ``[-0.012, +0.004]``."""
    lo, hi = entry["ci"]
    return f"[{lo:+.3f}, {hi:+.3f}]"


def fmt_plain(v, digits: int = 4) -> str:
    """A copied number as a table cell: ``-`` when missing, never ``-0.0000``."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    zero = f"-{0:.{digits}f}"
    return f"{v + 0.0:.{digits}f}".replace(zero, zero[1:])


def verdict_word(diff: dict) -> str:
    """What a paired difference a - b in a gap says: its interval above zero, below zero, or across it."""
    lo, hi = diff["ci"]
    if lo > 0:
        return "worse (larger gap)"
    if hi < 0:
        return "better (smaller gap)"
    return "not distinguishable"


def match_tables(data_root: str, split: str, sources: dict[str, list[str]]) -> tuple[dict, dict]:
    """Per group (male, female): ``{condition: [MatchTable per detections file]}``, in the order of
    ``sources`` (condition -> saved detection files, one per seed run)."""
    groups = load_split(data_root, split)
    male, female = {}, {}
    for name, paths in sources.items():
        for path in paths:
            saved = read_detections(path)
            for group, store in (("male", male), ("female", female)):
                table = match_table(groups[group].coco, saved["detections"][group], saved["image_ids"][group])
                store.setdefault(name, []).append(table)
    return male, female


class Section(NamedTuple):
    """What one section gives: markdown lines, its numbers for report.json, warnings for the top."""

    lines: list[str]
    data: dict = {}
    """Top-level keys of report.json; two sections giving the same key is a bug (see :func:`run_sections`)."""
    warnings: tuple = ()


def run_sections(sections, ctx) -> Section:
    """Every section in order: their lines joined, their data merged, their warnings collected."""
    lines, data, warned = [], {}, []
    for section in sections:
        part = Section(*section(ctx))
        clash = sorted(data.keys() & part.data.keys())
        if clash:
            raise ValueError(f"report section {section.__name__} gives {clash}, which an earlier section gave")
        lines += part.lines
        data.update(part.data)
        warned += part.warnings
    return Section(lines, data, tuple(warned))


def json_safe(obj):
    """A copy for strict JSON: numpy numbers as Python ones, tuples as lists, NaN and infinities as null."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_report(out_dir: str, lines: list[str], report: dict) -> None:
    """``out_dir/report.md`` (the lines) and ``report.json`` (strict JSON: :func:`json_safe`), ``out_dir``
    made when missing. Call it last: a report refused on its inputs must not leave a folder behind."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(json_safe(report), f, indent=2, allow_nan=False, default=float)
