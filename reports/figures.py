"""Figures of a study report (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from faap.evidence import Figure  # noqa: E402


def _save(fig, out_dir: str, name: str) -> str:
    os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
    path = os.path.join("figures", name)
    fig.savefig(os.path.join(out_dir, path), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def curves(epochs, clean_gap: float | None, out_dir: str, metric: str = "AP_gap", name: str = "curves.png",
           highlight: str = "") -> str:
    """Per-epoch validation metric, mean over seeds (band: min..max), per condition (``highlight`` in bold)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    df = epochs[epochs["metric"] == metric]
    for cond, part in df.groupby("condition", sort=False):
        g = part.groupby("epoch")["value"]
        mean, lo, hi = g.mean(), g.min(), g.max()
        style = dict(lw=2.5, color="black") if cond == highlight else dict(lw=1.2)
        (line,) = ax.plot(mean.index, mean.values, marker="o", label=cond, **style)
        ax.fill_between(mean.index, lo.values, hi.values, alpha=0.12, color=line.get_color())
    if clean_gap is not None:
        ax.axhline(clean_gap, ls="--", color="gray", label="clean detector")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(f"val {metric} (mean over seeds; band: min-max)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, name)


def forest(rows: list[dict], out_dir: str, name: str, xlabel: str) -> str:
    """Point estimates with intervals, one row per condition."""
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rows)))
    for i, r in enumerate(rows):
        ax.errorbar(r["value"], i, xerr=[[r["value"] - r["ci"][0]], [r["ci"][1] - r["value"]]], fmt="o", capsize=4)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_dir, name)


def param_effects(trials, params: list[str], metric: str, seeds_cols: list[str], out_dir: str) -> str:
    """Objective against each parameter: every seed's value (dots) and the trial mean (cross)."""
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.5), squeeze=False)
    for ax, p in zip(axes[0], params):
        col = f"param_{p}"
        for s in seeds_cols:
            ax.scatter(trials[col], trials[s], s=14, alpha=0.6, color="tab:blue")
        ax.scatter(trials[col], trials[metric], marker="x", s=60, color="tab:red", label="trial mean")
        if trials[col].dtype.kind == "f" and trials[col].min() > 0 and trials[col].max() / trials[col].min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(p)
        ax.set_ylabel(f"val {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, out_dir, "params.png")


def scatter(points: np.ndarray, xlabel: str, ylabel: str, out_dir: str, name: str, title: str = "") -> str:
    """x, y from the first two columns of ``points``, with a line at y = 0."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(points[:, 0], points[:, 1], s=16)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, name)


def bars(groups: dict[str, dict[str, float]], ylabel: str, out_dir: str, name: str, title: str = "") -> str:
    """Grouped bars: ``{series: {category: value}}``."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.set_title(title)
    series = list(groups)
    cats = list(next(iter(groups.values())))
    width = 0.8 / len(series)
    for i, s in enumerate(series):
        ax.bar(np.arange(len(cats)) + i * width, [groups[s][c] for c in cats], width, label=s)
    ax.set_xticks(np.arange(len(cats)) + width * (len(series) - 1) / 2, cats)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, name)


def draw(figure: Figure, out_dir: str) -> str:
    """Draw a figure a hypothesis judge described; returns its path relative to ``out_dir``."""
    if figure.kind == "bars":
        return bars(figure.data, figure.ylabel, out_dir, figure.name, figure.title)
    return scatter(np.asarray(figure.data), figure.xlabel, figure.ylabel, out_dir, figure.name, figure.title)


def save_axes(ax, out_dir: str, name: str) -> str:
    """Save the figure of a matplotlib Axes (or array of Axes) made elsewhere (e.g. by optuna)."""
    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
    return _save(fig, out_dir, name)
