"""Parallel workers on the embedded journal and on PostgreSQL; SIGKILLed workers; W&B read-back."""

import collections
import glob
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from ablations.runner import prepare
from ablations.study import baseline_study_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
FIXED = {"train_scales": [128], "max_size": 128, "eval_size": 128, "random_crop": False, "batch_size": 4,
         "epoch_samples": 8, "epochs": 1, "device": "cpu"}


def write_spec(tmp_path, data, name, values, epochs=1, baselines=(), epoch_samples=8, **extra):
    spec = {"study": name, "variant": "infonce", "data": data, "detector": "demo",
            "fixed": {**FIXED, "epochs": epochs, "epoch_samples": epoch_samples},
            "search_space": {"temperature": {"type": "grid", "values": values}}, "sampler": "grid",
            "objectives": [{"metric": "AP_gap", "direction": "minimize"}], "n_trials": len(values), "seeds": [42],
            "baselines": list(baselines), **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _env(tmp_path):
    return {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "FAAP_RUNS": str(tmp_path / "runs")}


def start_worker(name, url, tmp_path, *extra):
    cmd = [sys.executable, "-m", "faap.cli", "sweep", "worker", name, "--storage", url, "--threads", "1",
           "--wandb", "off", "--heartbeat", "0.5", "--grace", "4", *extra]
    return subprocess.Popen(cmd, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(procs, timeout=400):
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=timeout)
        out.append(text)
        assert p.returncode in (0, -signal.SIGKILL), text[-3000:]
    return out


def grid_counts(study):
    """COMPLETE trials per grid point, and every trial's state."""
    trials = study.get_trials(deepcopy=False)
    done = collections.Counter(t.user_attrs["grid_key"] for t in trials if t.state == TrialState.COMPLETE)
    return done, collections.Counter(t.state.name for t in trials)


def _check_exactly_once(study, n_points):
    done, states = grid_counts(study)
    assert len(done) == n_points and set(done.values()) == {1}, (done, states)
    return states


def test_three_journal_workers_run_every_grid_point_once(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    url = str(tmp_path / "studies" / "journal.log")
    values = [0.03, 0.05, 0.07, 0.1, 0.2, 0.5]
    study, name = prepare(write_spec(tmp_path, tiny_data, "grid3", values), url)
    logs = finish([start_worker(name, url, tmp_path) for _ in range(3)])
    states = _check_exactly_once(optuna.load_study(study_name=name, storage=study._storage), len(values))
    assert states == {"COMPLETE": 6}
    assert sum("start grid3 trial" in text for text in logs) >= 2  # more than one worker did work
    trial = optuna.load_study(study_name=name, storage=study._storage).get_trials()[0]
    run_dir = trial.user_attrs["seed_42"]["run_dir"]
    assert os.path.isfile(os.path.join(run_dir, "summary.json")) and trial.user_attrs["trial_dir"] in run_dir
    assert trial.user_attrs["seed_42"]["selected_epoch"] == 0


def _wait_for(pattern, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        hits = glob.glob(pattern)
        if hits:
            return hits
        time.sleep(0.2)
    raise AssertionError(f"nothing matched {pattern} in {timeout}s")


def _retried(study):
    trials = study.get_trials(deepcopy=False)
    lost = [t for t in trials if t.state == TrialState.FAIL and "worker lost" in t.user_attrs.get("fail_reason", "")]
    retries = [t for t in trials if "retry_of" in t.user_attrs and t.state == TrialState.COMPLETE]
    return lost, retries


def test_killed_worker_trial_resumes_from_checkpoint(tiny_data, tmp_path, monkeypatch):
    """Journal backend: SIGKILL mid-trial, then `faap sweep resume` re-runs it from its checkpoint."""
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    url = str(tmp_path / "studies" / "journal.log")
    study, name = prepare(write_spec(tmp_path, tiny_data, "kill", [0.07, 0.2], epochs=3, epoch_samples=24,
                                     baselines=["adversarial"]), url)
    victim = start_worker(name, url, tmp_path)
    _wait_for(str(tmp_path / "studies" / "kill" / "trial_*" / "seed42" / "checkpoints" / "epoch_0000.pt"))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    r = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "resume", name, "--storage", url, "--wandb", "off",
                        "--heartbeat", "0.5", "--grace", "3"], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    study = optuna.load_study(study_name=name, storage=study._storage)
    _check_exactly_once(study, 2)
    lost, retries = _retried(study)
    assert len(lost) == 1 and len(retries) == 1
    assert retries[0].user_attrs["retry_of"] == lost[0].number
    assert retries[0].user_attrs["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
    run_dir = retries[0].user_attrs["seed_42"]["run_dir"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [0, 1, 2]  # each epoch once
    baseline = optuna.load_study(study_name=baseline_study_name(name, "adversarial"), storage=study._storage)
    assert [t.state.name for t in baseline.get_trials()] == ["COMPLETE"]  # baselines ran first, once
    assert "trial" in r.stdout and "state" in r.stdout  # the status table


def _pg_available():
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(PG_URL).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        return True
    except Exception:
        return False


@pytest.mark.postgres
def test_postgres_three_workers_and_a_killed_one(tiny_data, tmp_path, monkeypatch):
    """Three workers on PostgreSQL: one is SIGKILLed mid-trial, the others finish its trial from the checkpoint."""
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (start it: see .ci/run)")
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    name = f"pg-{uuid.uuid4().hex[:8]}"
    values = [0.03, 0.05, 0.07, 0.1, 0.2, 0.5]
    study, name = prepare(write_spec(tmp_path, tiny_data, name, values, epochs=2, epoch_samples=24), PG_URL)
    try:
        procs = [start_worker(name, PG_URL, tmp_path) for _ in range(3)]
        first = _wait_for(str(tmp_path / "runs" / "studies" / name / "trial_*" / "seed42" / "checkpoints" / "epoch_0000.pt"))
        trial_dir = first[0].split("/seed42/")[0]
        running = optuna.load_study(study_name=name, storage=PG_URL).get_trials(states=(TrialState.RUNNING,))
        owner_pid = next(int(t.user_attrs["worker"].split(":")[1]) for t in running if t.user_attrs["trial_dir"] == trial_dir)
        victim = next(p for p in procs if p.pid == owner_pid)
        victim.send_signal(signal.SIGKILL)  # mid-trial: epoch 0 is checkpointed, epoch 1 is not
        finish(procs)
        study = optuna.load_study(study_name=name, storage=PG_URL)
        states = _check_exactly_once(study, len(values))
        lost, retries = _retried(study)
        assert len(lost) == len(retries) == 1, states  # finished by the surviving workers
        assert lost[0].user_attrs["trial_dir"] == trial_dir == retries[0].user_attrs["trial_dir"]
        assert retries[0].user_attrs["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
        assert states["COMPLETE"] == len(values)
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_wandb_offline_run_reads_back(tiny_data, tmp_path, monkeypatch):
    """One trial with W&B offline: group, job_type, config, per-epoch history and summary, via `wandb leet`."""
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    url = str(tmp_path / "studies" / "journal.log")
    study, name = prepare(write_spec(tmp_path, tiny_data, "wb", [0.1], epochs=2), url)
    p = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "worker", name, "--storage", url, "--threads", "1",
                        "--wandb", "offline"], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    trial = optuna.load_study(study_name=name, storage=study._storage).get_trials()[0]
    wandb_dir = trial.user_attrs["seed_42"]["wandb"]
    assert wandb_dir.startswith(trial.user_attrs["trial_dir"])  # W&B files stay inside the run folder
    wandb_bin = os.path.join(os.path.dirname(sys.executable), "wandb")
    out = subprocess.run([wandb_bin, "leet", "inspect", "--json", wandb_dir], capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["run_group"] == "wb" and run["job_type"] == "infonce" and run["display_name"].startswith("t000-s42")
    config = run["config"]["update"]
    assert config["temperature"] == 0.1 and config["seed"] == 42 and "dataset_fingerprint" in config
    history = [r["history"] for r in records if r["type"] == "history"]
    assert len(history) == 2
    assert [h["item"]["epoch"] for h in history] == [0, 1]  # per-epoch curves against the epoch axis
    assert {"AP_gap", "AP_female", "AR_gap", "loss_infonce", "examples._type"} <= set(history[0]["item"])
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    seed = trial.user_attrs["seed_42"]
    assert summary["selected_epoch"] == seed["selected_epoch"]
    assert summary["test/AP_gap"] == pytest.approx(seed["test"]["AP_gap"])
    assert any(r["type"] == "artifact" for r in records)


def test_ctrl_c_requeues_and_says_how_to_resume(tiny_data, tmp_path):
    url = str(tmp_path / "studies" / "journal.log")
    spec = write_spec(tmp_path, tiny_data, "ctrlc", [0.1], epochs=4, epoch_samples=24)
    p = subprocess.Popen([sys.executable, "-m", "faap.cli", "sweep", "run", spec, "--storage", url, "--wandb", "off"],
                         env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(str(tmp_path / "studies" / "ctrlc" / "trial_*" / "seed42" / "checkpoints" / "epoch_0000.pt"))
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out[-1000:] + err[-2000:]
    assert f"faap sweep resume ctrlc --storage {url}" in err
    trials = optuna.load_study(study_name="ctrlc", storage=prepare_storage(url)).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[0].user_attrs["fail_reason"].startswith("interrupted")
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].system_attrs["fixed_params"] == {"temperature": 0.1}


def prepare_storage(url):
    from ablations.storage import open_storage

    return open_storage(url, create=False)


def test_wandb_loader_reads_offline_runs(tiny_data, tmp_path):
    """analysis.wandb_runs turns offline W&B runs into the tidy frame (same values as metrics.jsonl)."""
    from faap.tracking import WandbTracker
    from faap.trainer import Run
    from faap.variants import make_config
    from conftest import tiny_values
    from analysis.wandb_runs import load_offline

    out = tmp_path / "run"
    tracker = WandbTracker("offline", group="g", job_type="infonce", name="t000-s42")
    Run(make_config("infonce", tiny_values(tiny_data)), str(out), progress=False).fit(callbacks=[tracker])
    tracker.close()
    frame = load_offline(str(out))
    with open(out / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    gap = frame[(frame.metric == "AP") & (frame.group == "female")].sort_values("epoch")
    assert gap["value"].tolist() == pytest.approx([r["AP_female"] for r in records])
    assert set(frame.columns) >= {"run", "seed", "epoch", "split", "condition", "group", "metric", "value"}


def test_idle_worker_looks_again_soon_then_less_often(monkeypatch):
    """While others' trials run, an idle worker waits 0.5, 1, 2, ... s, capped at one heartbeat; it exits
    as soon as nothing runs (it used to sleep a whole heartbeat, 30 s, after another worker's last trial)."""
    import ablations.runner
    from ablations import worker
    from ablations.study import StoredStudy

    running = iter([True] * 8 + [False])
    sleeps = []
    monkeypatch.setattr(worker, "load", lambda name, url: StoredStudy(None, None))
    monkeypatch.setattr(worker, "baseline_studies", lambda stored, url: [])
    monkeypatch.setattr(ablations.runner, "resolve_data", lambda spec: spec)
    monkeypatch.setattr(ablations.runner, "ensure_clean_baseline", lambda stored, url: None)
    monkeypatch.setattr(worker, "_take", lambda *a: None)
    monkeypatch.setattr(worker, "_running", lambda studies: next(running))
    monkeypatch.setattr(worker.time, "sleep", sleeps.append)
    assert worker.work("s", None, heartbeat_interval=10.0) == 0
    assert sleeps == [0.5, 1, 2, 4, 8, 10, 10, 10]
