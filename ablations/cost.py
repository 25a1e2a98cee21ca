"""``faap sweep cost STUDY``: where a finished study's time went, measured from its own records.

Per trial (baselines included): wall time (ask to tell), time in the training loops, in
per-epoch validation, in the one test evaluation of each seed, and the rest: the runner's
overhead (model and data loading, checkpoints, Optuna storage, W&B); plus the epochs
trained against the epochs the trial would have trained without pruning.
"""

from __future__ import annotations

import pandas as pd

from ablations.study import baseline_studies, load
from faap.rundir import RunDir


def cost_frame(name: str, url: str | None) -> pd.DataFrame:
    stored = load(name, url)
    study, spec = stored
    epochs_per_run = int({**spec.base, **spec.fixed}.get("epochs", 24))
    rows = []
    for s in baseline_studies(stored, url) + [study]:
        for t in s.get_trials(deepcopy=False):
            if t.state.name not in ("COMPLETE", "PRUNED") or t.datetime_complete is None:
                continue
            trial_dir = t.user_attrs.get("trial_dir")
            seeds = spec.seeds_of(s is not study)
            runs = [RunDir.of_seed(trial_dir, seed) for seed in seeds]
            records = [r for run in runs for r in run.read_metrics()]
            train = sum(r.get("train_seconds", 0.0) for r in records)
            val = sum(r["epoch_seconds"] - r.get("train_seconds", 0.0) for r in records)
            test = sum(run.read_summary().get("final_eval_seconds", 0.0) for run in runs if run.finished())
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
            rows.append({"study": "main" if s is study else s.user_attrs.get("variant"), "trial": t.number,
                         "state": t.state.name, "wall_s": wall, "train_s": train, "val_eval_s": val,
                         "final_eval_s": test, "other_s": wall - train - val - test, "epochs_trained": len(records),
                         "epochs_budget": epochs_per_run * len(seeds)})
    return pd.DataFrame(rows)


def summarize_cost(df: pd.DataFrame) -> dict:
    main = df[df["study"] == "main"]
    trained, budget = int(main["epochs_trained"].sum()), int(main["epochs_budget"].sum())
    per_epoch = (main["train_s"].sum() + main["val_eval_s"].sum()) / max(1, trained)
    return {
        "trials": len(df), "mean_wall_s": df["wall_s"].mean(), "mean_other_s": df["other_s"].mean(),
        "other_share": df["other_s"].sum() / df["wall_s"].sum(),
        "epochs_trained": trained, "epochs_without_pruning": budget,
        "pruning_saved_epochs": budget - trained, "pruning_saved_share": 1 - trained / budget if budget else 0.0,
        "pruning_saved_s_est": (budget - trained) * per_epoch,
    }


def print_cost(name: str, url: str | None) -> None:
    df = cost_frame(name, url)
    if df.empty:
        print("no finished trials")
        return
    with pd.option_context("display.width", 200, "display.float_format", "{:.1f}".format):
        print(df.to_string(index=False))
    s = summarize_cost(df)
    print(f"\nrunner overhead (everything but training, validation and test evaluation): mean {s['mean_other_s']:.1f} s "
          f"per trial, {100 * s['other_share']:.0f}% of trial wall time")
    print(f"pruning: {s['epochs_trained']} of {s['epochs_without_pruning']} epochs trained "
          f"({100 * s['pruning_saved_share']:.0f}% saved, about {s['pruning_saved_s_est']:.0f} s at this study's "
          f"measured seconds per epoch)")

