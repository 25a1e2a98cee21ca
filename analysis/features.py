"""Feature space of trained runs: where the perturbation moves each group's images, with intervals.

The authors' ``eval_tsne_features.py`` measured this by hand on a projection head's outputs; here it is
measured for every condition a report shows, on each feature space its run has: the pooled decoder
features (mean over queries, what every variant's losses start from) and, when the run's variant has a
``proj_head`` (InfoNCE and its kin), the head's output. Per condition and space, on the same first
validation images of each group, clean and perturbed (rows are images, in the same order):

- displacement per group: the mean L2 distance an image's feature moves from clean to perturbed;
- the female/male displacement ratio;
- centroid distance (L2 between the female and the male centroid) and centroid cosine, before (clean)
  and after (perturbed), and their change.

Each has a bootstrap interval over images (each group's images resampled on their own,
:func:`faap.measures.bootstrap_ci`); a difference between two conditions resamples the image indices
jointly when both saw the same images (paired), each condition's own otherwise. :func:`embed` gives the
t-SNE coordinates a report draws; :func:`refusal` says why a space cannot be drawn (a group missing, or
too few images for the smallest perplexity), which the original's first run did not check: it embedded
500 women and 0 men without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.diagnostics import run_features
from faap.measures import bootstrap_ci

GROUPS = ("female", "male")
MIN_PERPLEXITY = 5
"""Below this a t-SNE neighbourhood is a handful of points and the picture is noise: refused."""
MAX_PERPLEXITY = 30
"""scikit-learn's default, reached from 31 images per group."""
SPACES = {"decoder": "pooled decoder features", "projection": "projection head output"}
"""Feature spaces by key (report.json) and by how the report names them."""


def perplexity_for(counts: dict) -> int:
    """The t-SNE perplexity for these images per group: below the smaller group's count, so that a
    point's neighbourhood is at most one group's clean cloud, and at most :data:`MAX_PERPLEXITY`."""
    return min(MAX_PERPLEXITY, min(counts.get(g, 0) for g in GROUPS) - 1)


def refusal(counts: dict, who: str) -> str | None:
    """Why the feature space of ``who`` (a condition's name) cannot be drawn or measured, or None."""
    for g in GROUPS:
        if not counts.get(g):
            return f"the {g} group is missing from the validation images of {who}"
    g = min(GROUPS, key=lambda g: counts[g])
    if perplexity_for(counts) < MIN_PERPLEXITY:
        return (f"the {g} group of {who} has {counts[g]} validation images, fewer than the {MIN_PERPLEXITY + 1} "
                f"a t-SNE perplexity of {MIN_PERPLEXITY} needs")
    return None


@dataclass
class Space:
    """One feature space of one run: ``{group: array n x d}`` clean and perturbed, rows in image order."""

    clean: dict
    perturbed: dict
    image_ids: dict
    """``{group: [image id per row]}``: equal for two runs means paired differences."""
    moved: dict = field(init=False)
    """``{group: array n}``: the L2 distance each image's feature moves."""

    def __post_init__(self):
        self.clean = {g: np.asarray(v, dtype=np.float64) for g, v in self.clean.items()}
        self.perturbed = {g: np.asarray(v, dtype=np.float64) for g, v in self.perturbed.items()}
        self.moved = {g: np.linalg.norm(self.perturbed[g] - self.clean[g], axis=1) for g in self.clean}

    @property
    def counts(self) -> dict:
        return {g: len(self.clean.get(g, ())) for g in GROUPS}


def run_spaces(run_dir: str, n_images: int, device: str = "cpu", extracted=None) -> dict[str, Space]:
    """The feature spaces of a run's selected checkpoint on the first ``n_images`` validation images per group:
    'decoder' always, 'projection' when its variant has a ``proj_head`` (in eval mode: no dropout).
    ``extracted``: the run's :class:`~analysis.diagnostics.RunFeatures` (clean and perturbed views at least),
    when the caller holds them already."""
    extracted = extracted or run_features(run_dir, n_images=n_images, device=device, views=("clean", "perturbed"))
    feats, ids = extracted.features, extracted.image_ids
    spaces = {"decoder": {v: {g: f[v].mean(1) for g, f in feats.items()} for v in ("clean", "perturbed")}}
    head = getattr(extracted.variant, "proj_head", None)
    if isinstance(head, torch.nn.Module):
        head.eval()
        with torch.no_grad():
            spaces["projection"] = {v: {g: head(f[v]) for g, f in feats.items()} for v in ("clean", "perturbed")}
    return {k: Space({g: t.cpu().numpy() for g, t in s["clean"].items()},
                     {g: t.cpu().numpy() for g, t in s["perturbed"].items()}, ids) for k, s in spaces.items()}


def _centroid_gap(s: Space, view: str, i, j) -> tuple[np.ndarray, np.ndarray]:
    images = getattr(s, view)
    return images["female"][i].mean(0), images["male"][j].mean(0)


def _distance(s: Space, view: str, i, j) -> float:
    f, m = _centroid_gap(s, view, i, j)
    return float(np.linalg.norm(f - m))


def _cosine(s: Space, view: str, i, j) -> float:
    f, m = _centroid_gap(s, view, i, j)
    norms = np.linalg.norm(f) * np.linalg.norm(m)
    return float(f @ m / norms) if norms > 0 else float("nan")


def _ratio(s: Space, i, j) -> float:
    male = s.moved["male"][j].mean()
    return float(s.moved["female"][i].mean() / male) if male > 0 else float("nan")


STATISTICS = {
    "displacement_female": lambda s, i, j: float(s.moved["female"][i].mean()),
    "displacement_male": lambda s, i, j: float(s.moved["male"][j].mean()),
    "displacement_ratio": _ratio,
    "centroid_distance_before": lambda s, i, j: _distance(s, "clean", i, j),
    "centroid_distance_after": lambda s, i, j: _distance(s, "perturbed", i, j),
    "centroid_distance_change": lambda s, i, j: _distance(s, "perturbed", i, j) - _distance(s, "clean", i, j),
    "centroid_cosine_before": lambda s, i, j: _cosine(s, "clean", i, j),
    "centroid_cosine_after": lambda s, i, j: _cosine(s, "perturbed", i, j),
    "centroid_cosine_change": lambda s, i, j: _cosine(s, "perturbed", i, j) - _cosine(s, "clean", i, j),
}
"""Each measure of a space on the female images ``i`` and the male images ``j`` (row indices)."""


def _entry(value: float, ci) -> dict:
    return {"value": value, "ci": list(ci) if ci is not None else None}


def measure_space(s: Space, replicates: int = 1000, seed: int = 0) -> dict:
    """Every measure of :data:`STATISTICS` with its 95% interval over images: ``{name: {value, ci}}``."""
    rows = [np.arange(s.counts[g]) for g in GROUPS]
    return {name: _entry(*bootstrap_ci(lambda i, j, stat=stat: stat(s, i, j), *rows, replicates=replicates, seed=seed))
            for name, stat in STATISTICS.items()}


def paired(a: Space, b: Space) -> bool:
    """Whether ``a`` and ``b`` hold the same images in the same rows (same ids per group)."""
    return all(list(a.image_ids.get(g, [])) == list(b.image_ids.get(g, [])) for g in GROUPS)


def difference(a: Space, b: Space, replicates: int = 1000, seed: int = 0) -> dict:
    """Every measure of ``a`` minus ``b`` with its 95% interval: on the same images one draw of image indices
    serves both (paired), else each space's images are resampled on their own. ``{name: {value, ci}}``."""
    if paired(a, b):
        rows = [np.arange(a.counts[g]) for g in GROUPS]
        stats = {n: (lambda i, j, st=st: st(a, i, j) - st(b, i, j)) for n, st in STATISTICS.items()}
    else:
        rows = [np.arange(s.counts[g]) for s in (a, b) for g in GROUPS]
        stats = {n: (lambda i, j, k, m, st=st: st(a, i, j) - st(b, k, m)) for n, st in STATISTICS.items()}
    return {n: _entry(*bootstrap_ci(st, *rows, replicates=replicates, seed=seed)) for n, st in stats.items()}


class FeatureSpace(dict):
    """The numbers (a plain dict for report.json) with the spaces behind them in :attr:`spaces`
    (``{condition: {space: Space}}``) for the drawing; a refused one holds ``refused`` (one line)."""

    def __init__(self, numbers: dict, spaces: dict):
        super().__init__(numbers)
        self.spaces = spaces


def feature_space(spaces: dict, n_images: int, replicates: int = 1000, seed: int = 0) -> FeatureSpace:
    """Measure ``spaces`` (``{condition: {space key: Space}}``, the reference first, the compared condition
    last) and the difference last minus first in every space both have; refused when a condition lacks a
    group or has too few images (see :func:`refusal`)."""
    numbers = {"n_images": n_images, "conditions": {}, "differences": {}}
    for cname, per_space in spaces.items():
        counts = per_space["decoder"].counts
        why = refusal(counts, cname)
        if why:
            return FeatureSpace({"n_images": n_images, "refused": why}, spaces)
        numbers["conditions"][cname] = {"images": counts, "perplexity": perplexity_for(counts),
                                        "spaces": {k: measure_space(s, replicates, seed) for k, s in per_space.items()}}
    names = list(spaces)
    if len(names) > 1:
        a, b = spaces[names[-1]], spaces[names[0]]
        numbers["differences"] = {"of": [names[-1], names[0]], "spaces": {
            k: {"paired": paired(a[k], b[k]), **difference(a[k], b[k], replicates, seed)} for k in a if k in b}}
    return FeatureSpace(numbers, spaces)


def embed(s: Space, seed: int = 0) -> dict:
    """t-SNE (scikit-learn, PCA-initialised, seeded) of clean and perturbed images of both groups together:
    ``{(view, group): array n x 2}``. Call it only on a space :func:`refusal` passes."""
    from sklearn.manifold import TSNE

    keys = [(v, g) for v in ("clean", "perturbed") for g in GROUPS]
    stacked = np.concatenate([getattr(s, v)[g] for v, g in keys])
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity_for(s.counts), random_state=seed).fit_transform(stacked)
    bounds = np.cumsum([0] + [len(getattr(s, v)[g]) for v, g in keys])
    return {k: xy[bounds[n]:bounds[n + 1]] for n, k in enumerate(keys)}
