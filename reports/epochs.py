"""The study report's per-epoch table, as the researchers' result summaries have it: every epoch's
AP per group and AP gap of the reference baseline, the best and the median trial (mean over each
condition's seeds), the clean detector as the reference row, and the change of the AP gap against
the clean detector and against the study's reference at the same epoch, in points and in percent.

Units, because the original summaries mixed them: AP values are fractions in [0, 1]; a change in
**points** is 100 x the difference of two AP gaps (percentage points); a change in **%** is that
difference relative to the magnitude of the compared row's gap at the same epoch (so its sign is the
sign of the points).

Val comes from the runs' ``metrics.jsonl`` (``StudyData.epochs``); the clean row from the
``baseline_*`` values the runs recorded beside each epoch. Test rows exist only where a run was
evaluated epoch by epoch (``faap eval --run RUN --split test --epochs all``, ``RunDir.read_exploratory``):
they are marked exploratory, because choosing an epoch by them is selection on test.
"""

from __future__ import annotations

import pandas as pd

from faap.rundir import RunDir
from reports.common import Section, fmt_signed

SHOWN = ("AP_male", "AP_female", "AP_gap")
"""The metrics of a row (registry names), as the researchers' tables have them."""
EXPLORATORY_WARNING = ("choosing an epoch by these is selection on test; the report's verdicts use each run's "
                       "epoch selected on val")


def change(value: float, against: float | None) -> dict:
    """``value - against`` in points (x 100) and in percent of ``|against|`` (NaN when it is 0 or missing)."""
    if against is None:
        return {"points": float("nan"), "percent": float("nan")}
    diff = value - against
    return {"points": 100 * diff, "percent": 100 * diff / abs(against) if against else float("nan")}


def _conditions(ctx) -> list[tuple[str, str]]:
    """(condition, role) in table order: the reference baseline (when not the clean detector), best, median."""
    shown = [(ctx.ref, "reference")] if ctx.ref != "clean" else []
    if ctx.best.name == ctx.median.name:
        return shown + [(ctx.best.name, "best and median trial")]
    return shown + [(ctx.best.name, "best trial"), (ctx.median.name, "median trial")]


def _val_records(ctx, cname: str) -> list[dict]:
    """One record per run and epoch of ``cname`` (``run``, ``epoch`` and the :data:`SHOWN` metrics)."""
    df = ctx.data.epochs
    if df.empty:
        return []
    part = df[(df["condition"] == cname) & df["metric"].isin(SHOWN)]
    return part.pivot_table(index=["run", "epoch"], columns="metric", values="value").reset_index().to_dict("records")


def _val_clean(ctx) -> dict | None:
    """The clean detector's val metrics as the runs recorded them beside every epoch (``baseline_*``)."""
    df = ctx.data.epochs
    wanted = {f"baseline_{m}": m for m in SHOWN}
    part = df[df["metric"].isin(wanted)] if not df.empty else df
    if part.empty:
        return None
    means = part.groupby("metric")["value"].mean()
    return {m: float(means[k]) for k, m in wanted.items()}


def _test_records(ctx, cname: str) -> tuple[list[dict], list[dict]]:
    """Exploratory per-epoch test records of ``cname``'s runs, and the clean detector's beside each."""
    rows, clean = [], []
    for run in ctx.data.conditions[cname].runs:
        for r in RunDir(run).read_exploratory("test"):
            for store, kind in ((rows, "perturbed"), (clean, "baseline")):
                store.append({"run": run, "epoch": r["epoch"], "AP_male": r[kind]["male"]["AP"],
                              "AP_female": r[kind]["female"]["AP"], "AP_gap": r["gaps"]["AP"][kind]})
    return rows, clean


def _by_epoch(records: list[dict]) -> dict[int, dict]:
    """epoch -> the :data:`SHOWN` means over the runs that reached it, and ``seeds`` (how many)."""
    if not records:
        return {}
    g = pd.DataFrame(records).groupby("epoch")
    means, seeds = g[list(SHOWN)].mean(), g["run"].nunique()
    return {int(e): {**{m: float(means.at[e, m]) for m in SHOWN}, "seeds": int(seeds[e])} for e in means.index}


def _selected(ctx, cname: str) -> dict[int, int]:
    """epoch -> how many of ``cname``'s runs selected it on val."""
    counts: dict[int, int] = {}
    for run in ctx.data.conditions[cname].runs:
        epoch = RunDir(run).selected_epoch()
        counts[epoch] = counts.get(epoch, 0) + 1
    return counts


def _table(ctx, means: dict[str, dict], clean: dict) -> list[dict]:
    """The rows of one split: each shown condition's epochs with their changes against the clean detector and
    (at the same epoch) against the study's reference."""
    rows = []
    ref = means.get(ctx.ref, {})
    for cname, role in _conditions(ctx):
        selected, runs = _selected(ctx, cname), len(ctx.data.conditions[cname].runs)
        for epoch, m in sorted(means.get(cname, {}).items()):
            row = {"condition": cname, "label": ctx.label(cname), "role": role, "epoch": epoch, "seeds": m["seeds"],
                   "selected_on_val": selected.get(epoch, 0), "runs": runs, **{k: m[k] for k in SHOWN},
                   "change_vs_clean": change(m["AP_gap"], clean["AP_gap"])}
            if ctx.ref != "clean" and cname != ctx.ref:
                row["change_vs_reference"] = change(m["AP_gap"], ref.get(epoch, {}).get("AP_gap"))
            rows.append(row)
    return rows


def _mean_clean(records: list[dict]) -> dict | None:
    return {m: float(pd.DataFrame(records)[m].mean()) for m in SHOWN} if records else None


def _columns(ctx) -> tuple[str, str]:
    heads = ["condition", "epoch", "seeds", "selected on val", "AP male", "AP female", "AP gap",
             "Δ gap vs clean (points)", "Δ gap vs clean (%)"]
    if ctx.ref != "clean":
        heads += [f"Δ gap vs {ctx.label(ctx.ref)} (points)", f"Δ gap vs {ctx.label(ctx.ref)} (%)"]
    return "| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)


def _cells(c: dict | None) -> str:
    """A change's two cells: ``+0.40 | +3.8% |``; ``n/a`` where the compared row has no such epoch."""
    if c is None:
        return " - | - |"
    percent = fmt_signed(c["percent"], 1)
    return f" {fmt_signed(c['points'], 2)} | {percent}{'' if percent == 'n/a' else '%'} |"


def _markdown(ctx, clean: dict, rows: list[dict]) -> list[str]:
    lines = list(_columns(ctx))
    dash = " - | - |" * (2 if ctx.ref != "clean" else 1)
    lines.append(f"| {ctx.label('clean')} (reference row) | every | - | - | {clean['AP_male']:.4f} | "
                 f"{clean['AP_female']:.4f} | {clean['AP_gap']:.4f} |{dash}")
    for r in rows:
        chosen = f"{r['selected_on_val']} of {r['runs']}" if r["selected_on_val"] else ""
        line = (f"| {r['role']}: {r['label']} | {r['epoch']} | {r['seeds']} | {chosen} | {r['AP_male']:.4f} | "
                f"{r['AP_female']:.4f} | {r['AP_gap']:.4f} |" + _cells(r["change_vs_clean"]))
        if ctx.ref != "clean":
            line += _cells(r.get("change_vs_reference"))
        lines.append(line)
    return lines + [""]


def per_epoch_section(ctx) -> Section:
    """Val every epoch; exploratory test every epoch where runs were evaluated so (marked)."""
    shown = [c for c, _ in _conditions(ctx)]
    clean = _val_clean(ctx)
    lines = ["## Per-epoch table", ""]
    if clean is None:
        return Section(lines + ["(No per-epoch validation records yet.)", ""], {"per_epoch": None})
    val = _table(ctx, {c: _by_epoch(_val_records(ctx, c)) for c in shown}, clean)
    vs_ref = "" if ctx.ref == "clean" else f" and against the {ctx.label(ctx.ref)} at the same epoch"
    lines += [f"Validation, every epoch: mean over each condition's seeds (seeds: the runs that reached the epoch; "
              f"selected on val: how many of its runs selected the epoch). AP values are fractions; the change of the "
              f"AP gap against the clean detector{vs_ref} is in points (100 x the difference of the gaps) and in % "
              "(of the compared gap's magnitude).", ""] + _markdown(ctx, clean, val)
    data = {"units": "AP fractions; change points = 100 x difference of AP gaps; change percent = difference / "
                     "|compared gap| x 100", "reference": ctx.ref,
            "val": {"clean": clean, "rows": val}, "test_exploratory": None}
    found = {c: _test_records(ctx, c) for c in shown}
    test_clean = _mean_clean([r for _, base in found.values() for r in base])
    if test_clean is None:
        lines += ["No exploratory per-epoch test records (`faap eval --run RUN --split test --epochs all` writes "
                  f"them; {EXPLORATORY_WARNING}).", ""]
        return Section(lines, {"per_epoch": data})
    test = _table(ctx, {c: _by_epoch(rows) for c, (rows, _) in found.items()}, test_clean)
    for row in test:
        row["exploratory"] = True
    lines += ["### Test, every epoch (exploratory)", "",
              f"> **Exploratory:** from `faap eval --run RUN --split test --epochs all`; {EXPLORATORY_WARNING}.", ""]
    lines += _markdown(ctx, test_clean, test)
    data["test_exploratory"] = {"clean": test_clean, "rows": test, "note": EXPLORATORY_WARNING}
    return Section(lines, {"per_epoch": data})
