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


@pytest.mark.parametrize("flags, message", [
    (["--grace", "60", "--heartbeat", "10", "--storage-timeout", "55"],
     "--storage-timeout (55 s) must be > 0 and below --grace minus --heartbeat (60 - 10 s): "),
    (["--heartbeat", "30", "--grace", "20"], "--heartbeat (30 s) must be > 0 and below --grace (20 s): "),
    (["--heartbeat", "0"], "--heartbeat (0 s) must be > 0 and below --grace (300 s): ")])
def test_fault_settings_that_would_re_run_live_trials_are_refused(tmp_path, capsys, flags, message):
    """Checked before the storage is opened: one line, exit 2, nothing written."""
    from faap.cli import main

    journal = tmp_path / "journal.log"
    for command in (["run", os.path.join(ROOT, "sweeps", "demo.yaml")], ["worker", "demo"], ["resume", "demo"]):
        assert main(["sweep", *command, "--storage", str(journal), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("faap: error: " + message), err
    assert os.listdir(tmp_path) == []


def test_storage_timeout_defaults_below_the_grace():
    import argparse

    from ablations.cli import _check_fault_settings

    for grace, expected in ((300.0, 180.0), (100.5, 50.0), (4.5, 2.0)):
        args = argparse.Namespace(heartbeat=0.5, grace=grace, storage_timeout=None)
        _check_fault_settings(args)
        assert args.storage_timeout == expected


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


CLUSTER = os.path.join(ROOT, "ablations", "cluster")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


VAR = re.compile(r"\$\{(\w+)[^}]*\}|\$\((\w+)\)|\$(\w+)")


def _normalized(tokens):
    """Shell ($X, ${X:-d}) and Kubernetes ($(X)) variable references as {X}, to compare the two recipes."""
    return [VAR.sub(lambda m: "{%s}" % (m.group(1) or m.group(2) or m.group(3)), t) for t in tokens]


def slurm_command():
    import shlex

    with open(os.path.join(CLUSTER, "slurm_array.sh")) as f:
        line = next(line for line in f if line.startswith("exec faap sweep worker"))
    return shlex.split(line)[1:]


def k8s_container():
    import yaml

    with open(os.path.join(CLUSTER, "k8s_job.yaml")) as f:
        job = yaml.safe_load(f)
    assert job["kind"] == "Job" and job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    return job["spec"]["template"]["spec"]["containers"][0]


def k8s_pod_command(container, overrides):
    """The container's command and args with $(VAR) expanded from its env, as the kubelet does."""
    env = {e["name"]: e.get("value") for e in container["env"]}
    env.update(overrides)
    assert None not in env.values(), env  # every secret-fed variable is supplied by the test
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], t) for t in container["command"] + container["args"]], env


@pytest.mark.postgres
def test_cluster_recipes_run_two_array_tasks_and_two_pods(tiny_data, tmp_path):
    """The Slurm script (as 2 array tasks) and the Job manifest's command (as 2 pods) share one PostgreSQL study."""
    import uuid

    import optuna
    from test_sweep_workers import _check_exactly_once, _env, _pg_available, write_spec

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (start it: see .ci/run)")
    container = k8s_container()
    assert _normalized(slurm_command()) == _normalized(container["command"] + container["args"])  # same worker
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    values = [0.05, 0.1, 0.2, 0.5]
    env = {**_env(tmp_path), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    create = subprocess.run(["faap", "sweep", "run", write_spec(tmp_path, tiny_data, name, values), "--storage",
                             PG_URL, "--workers", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert create.returncode == 0, create.stderr[-2000:]
    assert f"start workers with: faap sweep worker {name} --storage {PG_URL}" in create.stdout
    shared = {"FAAP_STUDY": name, "FAAP_STORAGE": PG_URL, "FAAP_WANDB": "off", "FAAP_RUNS": str(tmp_path / "runs")}
    try:
        procs = [subprocess.Popen(["bash", os.path.join(CLUSTER, "slurm_array.sh")], text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env={**env, **shared, "SLURM_ARRAY_TASK_ID": str(task),
                                                                 "SLURM_CPUS_PER_TASK": "1"}) for task in (0, 1)]
        for _ in range(2):
            cmd, pod_env = k8s_pod_command(container, {**shared, "OMP_NUM_THREADS": "1"})
            procs.append(subprocess.Popen(cmd, env={**env, **pod_env}, text=True, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT))
        logs = [p.communicate(timeout=400)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, "\n".join(log[-1500:] for log in logs)
        assert "faap worker: array task 1 on" in logs[1]
        study = optuna.load_study(study_name=name, storage=PG_URL)
        assert _check_exactly_once(study, len(values)) == {"COMPLETE": len(values)}
        pids = {str(p.pid) for p in procs}  # `exec` keeps the array task's pid for the worker
        assert {t.user_attrs["worker"].split(":")[1] for t in study.get_trials()} <= pids
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def _pg_ctl(action):
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
                   + (["-m", "fast"] if action == "stop" else []), check=True, capture_output=True, timeout=60)


def _pg_ready(timeout=60):
    t0 = time.time()
    while subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode != 0:
        assert time.time() - t0 < timeout, "PostgreSQL did not come back"
        time.sleep(0.3)


@pytest.fixture
def pg_outage():
    """Stop (fast mode: clients are disconnected) and start the local PostgreSQL; always running again after."""
    try:
        yield _pg_ctl
    finally:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"]).returncode != 0:
            _pg_ctl("start")
        _pg_ready()


def _running_trial_dir(name, pid, timeout=180):
    import optuna
    from optuna.trial import TrialState

    t0 = time.time()
    while time.time() - t0 < timeout:
        for t in optuna.load_study(study_name=name, storage=PG_URL).get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{pid}") and "trial_dir" in t.user_attrs:
                return t.user_attrs["trial_dir"]
        time.sleep(0.3)
    raise AssertionError(f"worker {pid} took no trial in {timeout}s")


@pytest.mark.postgres
def test_worker_rides_out_a_storage_outage_and_a_stopped_one_is_resumed(tiny_data, tmp_path, pg_outage, monkeypatch):
    """PostgreSQL stops under two workers: the one with --storage-timeout 3 stops with one line (exit 2), the
    one with 15 s (grace 20 s) waits, carries on when the server is back, and re-runs the other's trial from its checkpoint."""
    import uuid

    import optuna
    from test_sweep_workers import _check_exactly_once, _pg_available, _retried, _wait_for, start_worker, write_spec

    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} (start it: see .ci/run)")
    from ablations.runner import prepare

    monkeypatch.setenv("FAAP_RUNS", str(tmp_path / "runs"))
    name = f"outage-{uuid.uuid4().hex[:8]}"
    prepare(write_spec(tmp_path, tiny_data, name, [0.07, 0.2], epochs=3, epoch_samples=24), PG_URL)
    procs = []
    try:
        short = start_worker(name, PG_URL, tmp_path, "--storage-timeout", "3")
        procs.append(short)
        trial_dir = _running_trial_dir(name, short.pid)
        patient = start_worker(name, PG_URL, tmp_path, "--grace", "20", "--storage-timeout", "15")
        procs.append(patient)
        _wait_for(os.path.join(trial_dir, "seed42", "checkpoints", "epoch_0000.pt"))
        pg_outage("stop")
        t0 = time.time()
        out, _ = short.communicate(timeout=60)
        stopped_after = time.time() - t0
        pg_outage("start")
        _pg_ready()
        assert short.returncode == 2 and "Traceback" not in out, out[-3000:]
        last = out.strip().splitlines()[-1]
        assert last.startswith(f"faap: error: storage {PG_URL} unreachable for ") and f"worker {short.pid} stopped" in last
        assert 3 <= stopped_after < 25, stopped_after  # 3 s of backoff, then one line
        text, _ = patient.communicate(timeout=300)
        assert patient.returncode == 0, text[-3000:]
        assert f"storage {PG_URL} unreachable" in text and f"storage {PG_URL} is back after" in text
        study = optuna.load_study(study_name=name, storage=PG_URL)
        _check_exactly_once(study, 2)
        lost, retries = _retried(study)
        assert len(lost) == len(retries) == 1
        assert lost[0].user_attrs["worker"].endswith(f":{short.pid}") and lost[0].user_attrs["trial_dir"] == trial_dir
        assert retries[0].user_attrs["worker"].endswith(f":{patient.pid}")
        assert retries[0].user_attrs["resumed_from_epoch"] >= 1  # from the checkpoint, not from scratch
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_retry_backs_off_exponentially_then_stops_in_one_line(monkeypatch):
    """Connection errors (also wrapped by Optuna) are retried 0.5, 1, 2, ... s until the timeout; others are not."""
    import optuna
    import sqlalchemy.exc

    from ablations import faults
    from ablations.storage import PostgresBackend

    clock, sleeps, lines = [1000.0], [], []
    monkeypatch.setattr(faults.time, "time", lambda: clock[0])
    monkeypatch.setattr(faults.time, "sleep", lambda s: (sleeps.append(s), clock.__setitem__(0, clock[0] + s)))

    def refused():
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, ConnectionError("connection refused"))
        except sqlalchemy.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e

    retry = faults.Retry(PostgresBackend("postgresql://u:s3cret@h/db"), timeout=10, log=lines.append)
    with pytest.raises(faults.StorageLost) as e:
        retry(refused)
    assert sleeps == [0.5, 1, 2, 4, 2.5] and str(e.value) == "storage postgresql://u:***@h/db unreachable for 10s " \
                                                               "(connection refused)"
    assert lines == ["storage postgresql://u:***@h/db unreachable (connection refused); retrying for up to 10s"]
    calls = iter([refused, lambda: "stored"])
    retry.down_since = None
    assert retry(lambda: next(calls)()) == "stored" and lines[-1] == "storage postgresql://u:***@h/db is back after 0s"
    with pytest.raises(KeyError):  # not a connection error: raised at once, no wait
        retry(lambda: {}["missing"])
    assert sleeps == [0.5, 1, 2, 4, 2.5, 0.5]
