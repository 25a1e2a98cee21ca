"""Import the original FAAP codebase's result folders (``faap_outputs``) into one tidy frame.

``load(path)`` reads every schema seen in the published results:

* evaluation JSON, full (``baseline``, ``perturbed``, ``deltas``, ``details``, ``gaps``,
  ``hyperparams``, ``notes``, ``generated_at``), perturbed-only, and the older forms without
  ``details`` or ``gaps``;
* ``train_log.jsonl`` (one object per epoch; keys differ per script; ``_f``/``_m`` suffixes
  are the female/male values);
* ``config.json`` (the script's arguments) and ``dataset_layout.json`` (image counts).

Columns: ``run, epoch, split, condition, group, metric, value, source`` (``source`` is the
file relative to ``path``). The run comes from the folder (``faap_outputs_<run>/``) or, for
files at the top level, from what is left of the file name once the split, condition and
epoch tokens are taken out. The epoch comes from ``epoch_NNNN`` / ``_NNNN`` in the name or
from the generator checkpoint's file name. Files that cannot be read are listed in
``frame.attrs["problems"]``, never skipped silently; configs are in ``frame.attrs["configs"]``.
"""

from __future__ import annotations

import json
import os
import re

import pandas as pd

COLUMNS = ["run", "epoch", "split", "condition", "group", "metric", "value", "source"]
GROUP_SUFFIX = {"_f": "female", "_m": "male"}
FOLDER_GROUP = {"women": "female", "men": "male"}


FIXED_NAMES = ("train_log.jsonl", "config.json", "dataset_layout.json")


def _run_and_tokens(rel: str, root_run: str) -> tuple[str, dict]:
    folder, name = os.path.split(rel)
    stem = name.rsplit(".", 1)[0]
    tokens = {}
    m = re.search(r"epoch_?(\d+)", stem) or re.search(r"_(\d{4})(?:_|$)", stem)
    if m:
        tokens["epoch"] = int(m.group(1))
    for split in ("test", "val", "train"):
        if re.search(rf"(^|_){split}(_|$)", stem):
            tokens["split"] = split
    if folder:
        run = os.path.basename(folder)
        run = run[len("faap_outputs_"):] if run.startswith("faap_outputs_") else run
        return run, tokens
    if name in FIXED_NAMES:
        return root_run, tokens
    rest = re.sub(r"epoch_?\d+|_\d{4}(?=_|$)", "", stem)
    for word in ("faap_metrics", "test_metrics", "val_metrics", "metrics", "perturbed", "perturb", "test", "val"):
        rest = re.sub(rf"(^|_){word}(?=_|$)", "", rest)
    rest = rest.strip("_")
    if rest == "baseline":
        return "baseline", tokens
    return rest or root_run, tokens


def _eval_rows(data: dict, run: str, tokens: dict, rel: str) -> list[dict]:
    hyper = data.get("hyperparams") or {}
    split = hyper.get("split") or tokens.get("split")
    epoch = tokens.get("epoch")
    if epoch is None:
        m = re.search(r"epoch_(\d+)", str(hyper.get("generator_checkpoint", "")))
        epoch = int(m.group(1)) if m else None
    rows = []

    def add(condition, group, metric, value):
        rows.append({"run": run, "epoch": epoch, "split": split, "condition": condition, "group": group,
                     "metric": metric, "value": float(value), "source": rel})

    for condition in ("baseline", "perturbed"):
        for group in ("male", "female"):
            block = (data.get(condition) or {}).get(group)
            if block:
                for metric in ("AP", "AR"):
                    if metric in block:
                        add(condition, group, metric, block[metric])
            details = ((data.get("details") or {}).get(condition) or {}).get(group) or {}
            for metric, value in details.items():
                add(condition, group, metric, value)
    if "epsilon" in hyper:
        add("perturbed", None, "epsilon", hyper["epsilon"])
    return rows


def _train_rows(path: str, run: str, rel: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            epoch = rec.get("epoch")
            for key, value in rec.items():
                if key == "epoch" or not isinstance(value, (int, float)):
                    continue
                group, metric = None, key
                for suffix, g in GROUP_SUFFIX.items():
                    if key.endswith(suffix):
                        group, metric = g, key[: -len(suffix)]
                rows.append({"run": run, "epoch": epoch, "split": "train", "condition": "train", "group": group,
                             "metric": metric, "value": float(value), "source": rel})
    return rows


def _layout_rows(data: dict, run: str, rel: str) -> list[dict]:
    rows = []
    for key, entry in data.items():
        m = re.fullmatch(r"(women|men)_(train|val|test)", key)
        if m and isinstance(entry, dict) and "num_images" in entry:
            rows.append({"run": run, "epoch": None, "split": m.group(2), "condition": "data",
                         "group": FOLDER_GROUP[m.group(1)], "metric": "num_images",
                         "value": float(entry["num_images"]), "source": rel})
    return rows


def load(path: str) -> pd.DataFrame:
    """The tidy frame of every result file under ``path``."""
    if not os.path.isdir(path):
        from faap.errors import UserError

        raise UserError(f"legacy results folder not found: {path}")
    rows, problems, configs = [], [], {}
    for dirpath, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, path)
            run, tokens = _run_and_tokens(rel, os.path.basename(os.path.normpath(path)))
            try:
                if name.endswith(".jsonl"):
                    rows += _train_rows(full, run, rel)
                    continue
                if not name.endswith(".json"):
                    problems.append((rel, "not a JSON result file"))
                    continue
                with open(full) as f:
                    data = json.load(f)
                if name == "config.json":
                    configs[run] = data
                elif name == "dataset_layout.json":
                    rows += _layout_rows(data, run, rel)
                elif isinstance(data, dict) and ("perturbed" in data or "baseline" in data):
                    rows += _eval_rows(data, run, tokens, rel)
                else:
                    problems.append((rel, "unknown JSON schema (no 'baseline' or 'perturbed')"))
            except (OSError, ValueError, TypeError, AttributeError) as e:
                problems.append((rel, f"{type(e).__name__}: {e}"))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["epoch"] = frame["epoch"].astype("Int64")
    frame.attrs["problems"] = problems
    frame.attrs["configs"] = configs
    return frame


def eval_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluation file: AP/AR per group and condition, gaps, and whether it has a baseline."""
    ev = frame[frame["condition"].isin(["baseline", "perturbed"]) & frame["metric"].isin(["AP", "AR"])]
    # dropna=False: a file that does not say its split stays in the table (and is warned about), not dropped.
    wide = ev.groupby(["source", "run", "split", "condition", "metric", "group"], dropna=False)["value"].first().unstack(
        ["condition", "metric", "group"])
    wide.columns = [f"{c}_{m}_{g}" for c, m, g in wide.columns]
    wide = wide.reset_index()
    epochs = frame.dropna(subset=["epoch"]).groupby("source")["epoch"].first()
    wide["epoch"] = wide["source"].map(epochs).astype("Int64")
    for c in ("baseline", "perturbed"):
        for m in ("AP", "AR"):
            if f"{c}_{m}_male" in wide and f"{c}_{m}_female" in wide:
                wide[f"{c}_{m}_gap"] = wide[f"{c}_{m}_male"] - wide[f"{c}_{m}_female"]
    wide["has_baseline"] = wide["baseline_AP_male"].notna() if "baseline_AP_male" in wide else False
    return wide


RERUN_NOISE = 0.001
"""Clean AP of one group differing by more than this between files = a different baseline."""


def eval_rows(frame: pd.DataFrame) -> list[dict]:
    """:func:`eval_summary` as one dict per evaluation file, with the file's ``epsilon`` and its
    ``AP_gap_change`` (perturbed minus its own baseline's AP gap; NaN for a file without a baseline)."""
    eps = frame[frame["metric"] == "epsilon"].set_index("source")["value"]
    rows = []
    for r in eval_summary(frame).to_dict("records"):
        r["epsilon"] = float(eps.get(r["source"], float("nan")))
        r["AP_gap_change"] = (r["perturbed_AP_gap"] - r["baseline_AP_gap"]) if r["has_baseline"] else float("nan")
        rows.append(r)
    return rows


def baseline_clusters(rows: list[dict], noise: float = RERUN_NOISE) -> list[dict]:
    """Files whose clean AP per group agree within ``noise`` on the same split share a baseline:
    ``[{split, key: (AP male, AP female), gap, files}]``, in the order first seen. Files without a
    baseline belong to none."""
    clusters = []
    for r in rows:
        if not r["has_baseline"]:
            continue
        key = (r["baseline_AP_male"], r["baseline_AP_female"])
        for c in clusters:
            if c["split"] == r["split"] and abs(c["key"][0] - key[0]) <= noise and abs(c["key"][1] - key[1]) <= noise:
                c["files"].append(r["source"])
                break
        else:
            clusters.append({"split": r["split"], "key": key, "gap": key[0] - key[1], "files": [r["source"]]})
    return clusters


def layout_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per split (rows) and group (columns) from ``dataset_layout.json``; empty without one."""
    layout = frame[frame["condition"] == "data"]
    if layout.empty:
        return pd.DataFrame()
    return layout.pivot_table(index="split", columns="group", values="value", aggfunc="first")


def loss_curves(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each run's training losses per epoch from its ``train_log.jsonl`` (runs without one left out), in
    the per-epoch layout the report's curves read: columns condition (the loss's name), epoch, metric
    ('loss'), value."""
    train = frame[frame["condition"] == "train"]
    out = {}
    for run, part in train.groupby("run"):
        curves = part[part["group"].isna() & part["metric"].str.contains("loss|g_|d_loss|total", regex=True)]
        if not curves.empty:
            out[run] = pd.DataFrame({"condition": curves["metric"], "epoch": curves["epoch"].astype(int),
                                     "metric": "loss", "value": curves["value"]})
    return out
