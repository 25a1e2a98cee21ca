"""Scaling a study out: GPU placement of workers, storage faults, many machines (issue 10)."""

import os
import re
import subprocess
import sys
import time

import pytest

from ablations.placement import placement
from ablations.storage import mask_url
from faap.cli import main
from faap.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpus_threads(envs):
    return [e.get("CUDA_VISIBLE_DEVICES") for e in envs], {e["OMP_NUM_THREADS"] for e in envs}


@pytest.mark.parametrize("workers, gpus, per_gpu, visible, cores, devices, threads", [
    (None, None, None, 4, 16, ["0", "1", "2", "3"], {"4"}),             # default: one worker per visible GPU
    (None, "all", 2, 4, 16, ["0", "1", "2", "3"] * 2, {"2"}),           # two per GPU, round-robin
    (None, "1,3", 3, 4, 8, ["1", "3"] * 3, {"1"}),                      # 6 workers on 8 cores: 1 thread each
    (4, None, None, 2, 16, ["0", "1", "0", "1"], {"4"}),                # --workers N round-robins the GPUs
    (3, "2", None, 4, 2, ["2", "2", "2"], {"1"}),                       # never 0 threads
    (None, None, None, 1, 8, ["0"], {"8"}),                             # one GPU: one pinned worker
    (None, None, None, 0, 16, [None], {"16"}),                          # CPU machine: one worker, as before
    (3, None, None, 0, 16, [None] * 3, {"5"}),                          # CPU workers share the cores
    (2, "none", None, 2, 8, ["", ""], {"4"}),                           # GPUs hidden on a GPU machine
])
def test_placement_env_of_each_worker(workers, gpus, per_gpu, visible, cores, devices, threads):
    envs = placement(workers, gpus, per_gpu, visible, cores, env={})
    assert _gpus_threads(envs) == (devices, threads)


def test_placement_maps_indices_through_an_inherited_allocation():
    """Inside a Slurm/container allocation (CUDA_VISIBLE_DEVICES=5,7) index 1 is device 7, not 1."""
    envs = placement(None, "1", 2, 2, 8, env={"CUDA_VISIBLE_DEVICES": "5,7"})
    assert _gpus_threads(envs) == (["7", "7"], {"4"})
    uuids = placement(None, None, None, 2, 8, env={"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})
    assert _gpus_threads(uuids) == (["GPU-aa", "GPU-bb"], {"4"})


@pytest.mark.parametrize("workers, gpus, per_gpu, visible, message", [
    (None, "2", None, 2, "--gpus: no GPU 2 here (2 visible: 0,1)"),
    (None, "0", None, 0, "--gpus 0: no CUDA device is visible on this machine"),
    (None, "all", None, 0, "--gpus all: no CUDA device is visible on this machine"),
    (None, "0,x", None, 2, "--gpus takes device indices like 0,1, 'all' or 'none' (got '0,x')"),
    (None, "1,1", None, 2, "--gpus names a device twice (1,1); use --per-gpu K for several workers per GPU"),
    (None, None, 0, 2, "--per-gpu must be >= 1 (got 0)"),
    (None, None, 2, 0, "--per-gpu goes with GPUs, and this run has none (no CUDA device, or --gpus none)"),
    (3, "all", 2, 2, "--workers 3 does not match 2 GPU(s) x --per-gpu 2; give one of them"),
    (0, None, None, 2, "--workers must be >= 1 (got 0)"),
])
def test_placement_refuses_bad_values(workers, gpus, per_gpu, visible, message):
    with pytest.raises(UserError) as e:
        placement(workers, gpus, per_gpu, visible, 8, env={})
    assert str(e.value) == message


@pytest.mark.parametrize("flags, message", [
    (["--gpus", "0"], "--gpus 0: no CUDA device is visible on this machine"),
    (["--gpus", "all"], "--gpus all: no CUDA device is visible on this machine"),
    (["--per-gpu", "0"], "--per-gpu must be >= 1 (got 0)"),
    (["--workers", "-1"], "--workers must be >= 0 (got -1)"),
])
def test_sweep_run_bad_placement_is_one_line_and_writes_nothing(flags, message, tmp_path, capsys, monkeypatch):
    """On this CPU-only machine: exit 2, one line, no journal and no runs folder."""
    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    journal = tmp_path / "studies" / "journal.log"
    code = main(["sweep", "run", os.path.join(ROOT, "sweeps", "demo.yaml"), "--storage", str(journal), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err == f"faap: error: {message}\n"
    assert not (tmp_path / "studies").exists() and not (tmp_path / "runs").exists()


def test_mask_url_hides_only_the_password():
    assert mask_url("postgresql://user:s3cret@db.lab:5432/studies") == "postgresql://user:***@db.lab:5432/studies"
    assert mask_url("postgresql://nobody@127.0.0.1:1/none") == "postgresql://nobody@127.0.0.1:1/none"
    assert mask_url("runs/studies/journal.log") == "runs/studies/journal.log"


def test_unreachable_storage_is_one_line_exit_2_and_creates_nothing(tmp_path):
    """Nothing listens on port 1: one line naming the URL with the password masked, fast, nothing written."""
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "FAAP_RUNS": str(tmp_path / "runs")}
    url = "postgresql://nobody:s3cret@127.0.0.1:1/none"
    for command in (["run", os.path.join(ROOT, "sweeps", "demo.yaml")], ["worker", "demo"], ["status", "demo"]):
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", *command, "--storage", url], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
        seconds = time.time() - t0
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.startswith("faap: error: cannot reach storage postgresql://nobody:***@127.0.0.1:1/none: ")
        assert "Connection refused" in r.stderr and r.stderr.count("\n") == 1 and "s3cret" not in r.stderr
        assert seconds < 30, seconds  # no retrying at start: the URL is wrong or the server is down
    assert os.listdir(tmp_path) == []


def test_status_shows_the_host_and_gpu_of_each_trial(tiny_data, tmp_path):
    """`faap sweep run --workers 2` on this CPU machine: each trial records host:pid and 'cpu'; status shows them."""
    import socket

    import optuna
    from test_sweep_workers import _env, write_spec

    from ablations.storage import open_storage

    url = str(tmp_path / "studies" / "journal.log")
    spec = write_spec(tmp_path, tiny_data, "where", [0.1, 0.2])
    r = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "run", spec, "--storage", url, "--workers", "2",
                        "--wandb", "off"], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    trials = optuna.load_study(study_name="where", storage=open_storage(url, create=False)).get_trials()
    hosts = {t.user_attrs["worker"].split(":")[0] for t in trials}
    assert hosts == {socket.gethostname()} and {t.user_attrs["gpu"] for t in trials} == {"cpu"}
    s = subprocess.run([sys.executable, "-m", "faap.cli", "sweep", "status", "where", "--storage", url],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    header, *rows = s.stdout.splitlines()[:3]
    assert header.split()[:5] == ["study", "trial", "state", "worker", "gpu"]
    for t, row in zip(trials, rows):
        assert row.split()[:5] == ["main", str(t.number), "COMPLETE", t.user_attrs["worker"], "cpu"]

