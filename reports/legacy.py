"""``faap report --legacy PATH --out DIR``: the original codebase's comparison tables, rebuilt from its files.

It lists every evaluation file (run, split, epoch, eps, clean and perturbed AP/AR per group,
gaps) and warns where comparisons cannot be trusted: files without a baseline of their own,
and baselines that differ between files by more than rerun noise (different splits or
settings: the 60/20/20 split and the later 80/10/10 re-split give clean AP gaps .106 and .098).
"""

from __future__ import annotations

import json
import os

import numpy as np

from analysis.legacy import eval_summary, load
from reports import figures

RERUN_NOISE = 0.001
"""Clean AP of one group differing by more than this between files = a different baseline."""


def _num(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v + 0.0:.4f}".replace("-0.0000", "0.0000")


def build(path: str, out_dir: str) -> dict:
    frame = load(path)
    ev = eval_summary(frame)
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    eps = frame[frame["metric"] == "epsilon"].set_index("source")["value"]
    rows = []
    for r in ev.to_dict("records"):
        r["epsilon"] = float(eps.get(r["source"], np.nan))
        rows.append(r)
    # Baseline clusters: files whose clean AP per group agree within rerun noise share a baseline.
    clusters = []
    for r in rows:
        if not r["has_baseline"]:
            continue
        key = (r["baseline_AP_male"], r["baseline_AP_female"])
        for c in clusters:
            if c["split"] == r["split"] and abs(c["key"][0] - key[0]) <= RERUN_NOISE \
                    and abs(c["key"][1] - key[1]) <= RERUN_NOISE:
                c["files"].append(r["source"])
                break
        else:
            clusters.append({"split": r["split"], "key": key, "gap": key[0] - key[1], "files": [r["source"]]})
    warnings = []
    for split in sorted({c["split"] for c in clusters}):
        same = [c for c in clusters if c["split"] == split]
        if len(same) > 1:
            warnings.append(f"{len(same)} different clean baselines on {split} (AP gap " + ", ".join(
                f"{c['gap']:.4f} in " + ", ".join(f"`{f}`" for f in c["files"]) for c in same) + "): these files come "
                "from different splits or settings; compare each run only with the baseline of its own file.")
    for r in rows:
        if not r["has_baseline"]:
            warnings.append(f"`{r['source']}` has no baseline of its own (perturbed-only): its gap "
                            f"{_num(r.get('perturbed_AP_gap'))} cannot be compared with a clean gap from another file.")
        if r["split"] is None or (isinstance(r["split"], float) and np.isnan(r["split"])):
            warnings.append(f"`{r['source']}` does not say which split it is on.")
    splits = {r["split"] for r in rows}
    if len(splits) > 1:
        warnings.append(f"results on several splits ({', '.join(sorted(map(str, splits)))}): a val result and a test "
                        "result are never compared in the tables below.")
    layout = frame[frame["condition"] == "data"]
    lines = [f"# Legacy results: {os.path.basename(os.path.normpath(path))}", "",
             f"Rebuilt from {frame['source'].nunique()} files under `{path}`; every number below is copied from the "
             "file named in its row. AP/AR are fractions in [0, 1]; gaps are male minus female.", ""]
    if frame.attrs["problems"]:
        lines += ["## Files that could not be read", ""] + [f"- `{f}`: {why}" for f, why in frame.attrs["problems"]] + [""]
    lines += ["## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"]) + [""]
    if not layout.empty:
        counts = layout.pivot_table(index="split", columns="group", values="value", aggfunc="first")
        total = counts.sum().sum()
        lines += ["## Dataset layout (dataset_layout.json)", "", "| split | female | male | share |", "| --- | --- | --- | --- |"]
        for split in ("train", "val", "test"):
            if split in counts.index:
                lines.append(f"| {split} | {int(counts.loc[split, 'female'])} | {int(counts.loc[split, 'male'])} | "
                             f"{counts.loc[split].sum() / total:.2f} |")
        lines.append("")
    for split in sorted(s for s in splits if isinstance(s, str)):
        lines += [f"## Evaluations on {split}", "",
                  "| file | run | epoch | eps | clean AP m / f | clean AP gap | perturbed AP m / f | perturbed AP gap | "
                  "AP gap change | clean AR gap | perturbed AR gap |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in (r for r in rows if r["split"] == split):
            change = (r["perturbed_AP_gap"] - r["baseline_AP_gap"]) if r["has_baseline"] else np.nan
            r["AP_gap_change"] = change
            lines.append(
                f"| `{r['source']}` | {r['run']} | {r['epoch'] if r['epoch'] is not None else '-'} | {_num(r['epsilon'])} | "
                f"{_num(r.get('baseline_AP_male'))} / {_num(r.get('baseline_AP_female'))} | {_num(r.get('baseline_AP_gap'))} | "
                f"{_num(r.get('perturbed_AP_male'))} / {_num(r.get('perturbed_AP_female'))} | {_num(r.get('perturbed_AP_gap'))} | "
                f"{_num(change)} | {_num(r.get('baseline_AR_gap'))} | {_num(r.get('perturbed_AR_gap'))} |")
        lines.append("")
    lines += ["No confidence intervals are possible here: the original files hold aggregate AP/AR only (no "
              "detections, one seed). Changes smaller than the clean baseline's own spread between reruns (about "
              ".0005 AP) are not evidence of an effect.", ""]
    train = frame[frame["condition"] == "train"]
    figs = []
    for run, part in train.groupby("run"):
        import pandas as pd

        curves = part[part["group"].isna() & part["metric"].str.contains("loss|g_|d_loss|total", regex=True)]
        if curves.empty:
            continue
        epochs = pd.DataFrame({"condition": curves["metric"], "epoch": curves["epoch"].astype(int), "metric": "loss",
                               "value": curves["value"]})
        figs.append((run, figures.curves(epochs, None, out_dir, "loss", f"train_{run}.png")))
    if figs:
        lines += ["## Training logs", ""] + [f"![{run}]({p})" for run, p in figs] + [""]
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    out = {"rows": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows],
           "warnings": warnings, "baselines": clusters, "problems": frame.attrs["problems"]}
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(out, f, indent=2, default=str)
    return out
