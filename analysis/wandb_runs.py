"""W&B runs into the same tidy frame: offline run folders (read with wandb's own reader), or online runs.

Offline: ``load_offline(paths)`` runs ``wandb leet inspect --json`` on each run folder and
keeps config, history and summary records. Online (logged in): ``load_online(project,
group)`` reads the runs of a study's group through ``wandb.Api``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pandas as pd

from analysis.study import split_group


def _wandb_cli() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "wandb")
    return beside if os.path.isfile(beside) else (shutil.which("wandb") or "wandb")


def read_offline_run(run_dir: str) -> dict:
    """``{"config", "group", "job_type", "name", "history": [...], "summary": {...}}`` of one offline run."""
    out = subprocess.run([_wandb_cli(), "leet", "inspect", "--json", run_dir], capture_output=True, text=True,
                         timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"wandb leet inspect failed on {run_dir}: {out.stderr.strip()[-300:]}")
    run = {"history": [], "summary": {}, "dir": run_dir}
    for line in out.stdout.splitlines():
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec["type"] == "run":
            r = rec["run"]
            run.update(config=r.get("config", {}).get("update", {}), group=r.get("run_group"),
                       job_type=r.get("job_type"), name=r.get("display_name"), id=r.get("run_id"))
        elif rec["type"] == "history":
            run["history"].append(rec["history"]["item"])
        elif rec["type"] == "summary":
            run["summary"].update(rec["summary"].get("update", {}))
    return run


def frame_from_runs(runs: list[dict]) -> pd.DataFrame:
    """Tidy rows: run, seed, epoch, split, condition, group, metric, value, source."""
    rows = []
    for r in runs:
        cfg = r.get("config", {})
        condition = cfg.get("variant") if "trial_number" not in cfg else f"trial {cfg['trial_number']}"
        for item in r["history"]:
            for key, value in item.items():
                if key.startswith("_") or key == "epoch" or not isinstance(value, (int, float)) or "." in key:
                    continue
                metric, group = split_group(key)
                rows.append({"run": r.get("name"), "seed": cfg.get("seed"), "epoch": item.get("epoch"), "split": "val",
                             "condition": condition, "group": group, "metric": metric, "value": float(value),
                             "source": r.get("dir") or r.get("id")})
    return pd.DataFrame(rows, columns=["run", "seed", "epoch", "split", "condition", "group", "metric", "value", "source"])


def load_offline(root: str) -> pd.DataFrame:
    """Every offline run folder under ``root`` (e.g. a study's run folders)."""
    dirs = sorted(glob.glob(os.path.join(root, "**", "offline-run-*"), recursive=True))
    return frame_from_runs([read_offline_run(d) for d in dirs])


def load_online(project: str, group: str, entity: str | None = None) -> pd.DataFrame:
    import wandb

    api = wandb.Api()
    runs = []
    for r in api.runs(f"{entity}/{project}" if entity else project, filters={"group": group}):
        runs.append({"config": dict(r.config), "group": r.group, "job_type": r.job_type, "name": r.name, "id": r.id,
                     "history": list(r.scan_history()), "summary": dict(r.summary)})
    return frame_from_runs(runs)
