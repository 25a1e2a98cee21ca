"""The study report's feature-space section: the reference and the best trial, each its first seed run's
selected checkpoint, clean and perturbed, in every feature space its run has (:mod:`analysis.features`):
a t-SNE figure, panels side by side, and a table of displacements and centroids with intervals."""

from __future__ import annotations

from analysis.features import GROUPS, SPACES, STATISTICS, embed, feature_space, run_spaces
from reports import figures
from reports.common import Section, fmt_signed

import matplotlib.pyplot as plt  # noqa: E402  (after reports.figures, which picks the Agg backend)
from matplotlib.lines import Line2D  # noqa: E402

HEADING = "## Feature space (clean vs perturbed)"
COLOURS = {"female": "tab:red", "male": "tab:blue"}
NAMES = {"displacement_female": "displacement, female", "displacement_male": "displacement, male",
         "displacement_ratio": "displacement ratio female/male",
         "centroid_distance_before": "centroid distance, clean", "centroid_distance_after": "centroid distance, perturbed",
         "centroid_distance_change": "centroid distance, change",
         "centroid_cosine_before": "centroid cosine, clean", "centroid_cosine_after": "centroid cosine, perturbed",
         "centroid_cosine_change": "centroid cosine, change"}
"""How the table names each measure of :data:`analysis.features.STATISTICS` (same keys)."""
assert NAMES.keys() == STATISTICS.keys()


def feature_space_section(ctx) -> Section:
    """Reference (when the study ran it) and best trial; the bound on images per group is ``ctx.n_images``."""
    names = [c for c in dict.fromkeys([ctx.ref, ctx.best.name]) if c != "clean"]
    runs = {c: ctx.data.conditions[c].runs[0] for c in names}
    spaces = {c: run_spaces(r, ctx.n_images, extracted=ctx.features(r)) for c, r in runs.items()}
    result = feature_space(spaces, ctx.n_images, ctx.replicates)
    labels = {c: ctx.label(c) for c in names}
    lines = [HEADING, ""]
    if "refused" in result:
        return Section(lines + [f"feature space not drawn: {result['refused']}.", ""], {"feature_space": dict(result)})
    for c, run in runs.items():
        result["conditions"][c]["run"] = run
    fig = draw(result, labels, ctx.out_dir)
    lines += [intro(result, labels, ctx.ref), "", f"![feature space, t-SNE]({fig})", ""]
    for key in SPACES:
        lines += table(result, labels, key)
    return Section(lines, {"feature_space": dict(result)})


def intro(result, labels: dict, ref: str) -> str:
    counts = next(iter(result["conditions"].values()))["images"]
    text = (f"Where the perturbation moves each group's images, on the first {result['n_images']} validation images per "
            f"group at most ({counts['female']} female, {counts['male']} male), the same images clean and perturbed, "
            "for " + " and ".join(labels.values()) + " (first seed run, selected checkpoint), in each feature space "
            "the run has. Displacement: mean L2 distance an image's feature moves; centroid distance and cosine: "
            "between the female and the male centroid. Intervals: 95% bootstrap over images (each group resampled "
            "on its own; one seed run, so they hold image sampling, not seed-to-seed variation).")
    if ref == "clean":
        text += " The study did not run a reference baseline, so no difference is shown."
    elif result["differences"]:
        paired = all(d["paired"] for d in result["differences"]["spaces"].values())
        text += (" Differences: " + " minus ".join(labels[c] for c in result["differences"]["of"])
                 + (", paired on the same images (one draw of image indices for both)." if paired
                    else ", each condition's images resampled on their own (they saw different images)."))
    return text


def _cell(entry: dict, signed: bool = False) -> str:
    value, ci = entry["value"], entry["ci"]
    if signed:
        return fmt_signed(value, 4) + (f" [{fmt_signed(ci[0], 4)}, {fmt_signed(ci[1], 4)}]" if ci else " (no interval)")
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else " (no interval)")


def table(result, labels: dict, key: str) -> list[str]:
    """The markdown table of one feature space: a column per condition that has it, and the difference."""
    shown = [c for c, r in result["conditions"].items() if key in r["spaces"]]
    if not shown:
        return []
    diff = result["differences"].get("spaces", {}).get(key)
    of = " minus ".join(labels[c] for c in result["differences"].get("of", []))
    head = [labels[c] for c in shown] + ([f"difference, {of}"] if diff else [])
    lines = [f"**{SPACES[key]}** (value [95% CI])", "", "| measure | " + " | ".join(head) + " |",
             "| --- |" + " --- |" * len(head)]
    for name, text in NAMES.items():
        cells = [_cell(result["conditions"][c]["spaces"][key][name], name.endswith("change")) for c in shown]
        cells += [_cell(diff[name], signed=True)] if diff else []
        lines.append(f"| {text} | " + " | ".join(cells) + " |")
    return lines + [""]


def draw(result, labels: dict, out_dir: str) -> str:
    """One t-SNE panel per condition and feature space, side by side: clean (hollow circles) and perturbed
    (filled triangles) images coloured by group, an arrow from each group's clean to its perturbed centroid."""
    panels = [(c, k) for c in result["conditions"] for k in SPACES if k in result.spaces[c]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (c, key) in zip(axes[0], panels):
        xy = embed(result.spaces[c][key])
        for g in GROUPS:
            ax.scatter(*xy["clean", g].T, s=18, facecolors="none", edgecolors=COLOURS[g], linewidths=0.9)
            ax.scatter(*xy["perturbed", g].T, s=18, marker="^", color=COLOURS[g], alpha=0.7)
            ax.annotate("", xy=xy["perturbed", g].mean(0), xytext=xy["clean", g].mean(0),
                        arrowprops=dict(arrowstyle="->", color=COLOURS[g], lw=2))
        r = result["conditions"][c]
        ax.set_title(f"{labels[c]}\n{SPACES[key]} (perplexity {r['perplexity']})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], ls="", marker=m, markersize=7, label=f"{g}, {v}", markeredgecolor=COLOURS[g],
                      markerfacecolor="none" if v == "clean" else COLOURS[g])
               for v, m in (("clean", "o"), ("perturbed", "^")) for g in GROUPS]
    handles.append(Line2D([], [], color="gray", lw=2, label="group centroid, clean -> perturbed"))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("t-SNE of image features, clean and perturbed (same images)", fontsize=10)
    return figures.save_axes(axes, out_dir, "feature_space.png")
