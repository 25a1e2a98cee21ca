"""``faap sweep run|resume|status|dashboard``: validate, create, start workers, report state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import optuna
import yaml
from optuna.trial import TrialState

from ablations.spec import StudySpec, load_spec, parse_spec
from ablations.storage import SYNTHETIC, backend_for, data_root, default_storage_url, file_lock, mask_url, runs_root
from ablations.study import StoredStudy, baseline_studies, create_or_load, load


def resolve_data(spec: StudySpec) -> StudySpec:
    """'synthetic' -> the built-in benchmark under runs/data (written once); else the root must be valid."""
    from faap.data.coco import fingerprint

    if spec.data == SYNTHETIC:
        root = data_root(spec.data)
        with file_lock(os.path.join(runs_root(), "data", "lock.synthetic.lock")):
            if not os.path.isfile(os.path.join(root, "men_split", "gender_men_test.json")):
                from faap.data.synth import generate

                print(f"writing the synthetic benchmark to {root}", flush=True)
                tmp = root + f".tmp{os.getpid()}"
                generate(tmp)
                os.replace(tmp, root)
        spec.data = root
    fingerprint(spec.data)  # validates the dataset: one clear line if it is broken
    return spec


def ensure_clean_baseline(stored: StoredStudy, url: str | None) -> dict:
    """The clean detector's val and test metrics, stored once in the study (user attribute)."""
    study, spec = stored
    if "clean_baseline" in study.user_attrs:
        return study.user_attrs["clean_baseline"]
    from faap.data.coco import fingerprint, load_split
    from faap.evaluate import Evaluator, clean_baseline, summarize
    from faap.runtime import detector_for, resolve_device
    from faap.variants import make_config

    cfg = make_config(spec.variant, spec.trial_values({}, spec.seeds[0]))
    device = resolve_device(cfg.device)
    fp = fingerprint(cfg.data)
    out = {"fingerprint": fp}
    detector = None
    for split in ("val", "test"):
        groups = load_split(cfg.data, split)
        if detector is None:
            detector = detector_for(cfg.detector, groups, device)
        ev = Evaluator(groups, detector, cfg, device, cfg.eval_max_images if split == "val" else 0)
        out[split] = summarize(clean_baseline(ev, fp, split))
    out["detector_id"] = detector.detector_id
    with backend_for(url).lock(study.study_name):
        if "clean_baseline" not in study.user_attrs:
            study.set_user_attr("clean_baseline", out)
    return out


def prepare(spec_path: str, url: str | None, study_name: str | None = None, n_trials: int | None = None,
            overrides: dict | None = None) -> tuple[optuna.Study, str]:
    """Validate everything, then create (or join) the study. Nothing is written on bad input."""
    from faap.detector import load_detector

    load_spec(spec_path)  # the file as written must be valid
    with open(spec_path) as f:
        raw = yaml.safe_load(f)
    raw.update({k: v for k, v in (("study", study_name), ("n_trials", n_trials)) if v})
    for key, value in (overrides or {}).items():  # --data, --detector, --base-config ('none' drops it)
        if value == "none":
            raw.pop(key, None)
        elif value:
            raw[key] = value
    spec = parse_spec(raw, spec_path)
    load_detector(spec.detector)  # fails fast on a missing detector
    if spec.data != SYNTHETIC:
        resolve_data(spec)
    return create_or_load(spec, raw, url).study, spec.study


def spawn_workers(name: str, url: str | None, envs: list[dict], wandb_mode: str, extra: list[str] = ()) -> int:
    """Start one worker process per environment of :func:`ablations.placement.placement`; wait; Ctrl-C stops them."""
    def start(env):
        cmd = [sys.executable, "-m", "faap.cli", "sweep", "worker", name, "--threads", env["OMP_NUM_THREADS"],
               "--wandb", wandb_mode, *extra] + (["--storage", url] if url else [])
        return subprocess.Popen(cmd, env={**os.environ, **env})  # the worker sets its wait policy (faap.threads)

    procs = [start(env) for env in envs]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches every worker already; give them time to re-queue their trials,
        # then interrupt the ones still running (a signal sent to this process alone), then kill.
        for grace, action in ((5, None), (60, lambda p: p.send_signal(signal.SIGINT)), (0, lambda p: p.kill())):
            deadline = time.time() + grace
            while time.time() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.2)
            for p in procs:
                if p.poll() is None and action is not None:
                    action(p)
        raise
    return max(codes)


def resume_hint(name: str, url: str | None) -> str:
    storage = f" --storage {mask_url(url)}" if url and url != default_storage_url() else ""
    return f"faap sweep resume {name}{storage}"


def status_frame(name: str, url: str | None):
    """The stored study, and a frame of one row per trial (baselines first): state, params, values, seeds,
    epochs, reasons."""
    import pandas as pd

    stored = load(name, url)
    study, objectives = stored.study, stored.spec.objectives
    rows = []
    for s in baseline_studies(stored, url) + [study]:
        for t in s.get_trials(deepcopy=False):
            row = {"study": "main" if s is study else s.user_attrs.get("variant", s.study_name), "trial": t.number,
                   "state": t.state.name, "worker": t.user_attrs.get("worker"), "gpu": t.user_attrs.get("gpu"),
                   **{f"param:{k}": v for k, v in t.params.items()}}
            for o, v in zip(objectives, t.values or [None] * len(objectives)):
                row[o["metric"]] = v
            seeds = {k[5:]: a for k, a in t.user_attrs.items() if re.fullmatch(r"seed_\d+", k)}
            row["seeds"] = len(seeds)
            row["selected_epochs"] = ",".join(str(a["selected_epoch"]) for a in seeds.values()) or None
            if t.state == TrialState.RUNNING:
                row["note"] = f"heartbeat {time.time() - t.user_attrs.get('heartbeat', time.time()):.0f}s ago"
            elif t.state == TrialState.FAIL:
                row["note"] = t.user_attrs.get("fail_reason", "")
            elif t.state == TrialState.PRUNED:
                row["note"] = f"pruned at step {t.user_attrs.get('pruned_at', {}).get('step')}"
            elif "resumed_from_epoch" in t.user_attrs:
                row["note"] = f"resumed from epoch {t.user_attrs['resumed_from_epoch']}"
            rows.append(row)
    return stored, pd.DataFrame(rows)

