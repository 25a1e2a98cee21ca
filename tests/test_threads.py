"""Threads and OpenMP wait policy of the commands that compute (faap.threads), and when they take effect."""

import os
import subprocess
import sys

import pytest
import torch

from faap.errors import UserError
from faap.threads import available_cores, configure_threads, end_announcement, resolve_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_thread_count_from_flag_env_or_cores(monkeypatch):
    monkeypatch.delenv("FAAP_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert available_cores() == len(os.sched_getaffinity(0))
    assert resolve_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it for each process
    assert resolve_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    with pytest.raises(UserError, match="OMP_NUM_THREADS must be a positive integer"):
        resolve_threads()
    monkeypatch.setenv("FAAP_THREADS", "3")
    assert resolve_threads() == 3  # over OMP_NUM_THREADS
    assert resolve_threads(5) == 5  # the flag wins over the environment
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("FAAP_THREADS", bad)
        with pytest.raises(UserError, match="FAAP_THREADS must be a positive integer"):
            resolve_threads()
    with pytest.raises(UserError, match="--threads must be >= 1"):
        resolve_threads(0)


def test_configure_sets_torch_and_environment(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    try:
        assert configure_threads(2) == 2
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # reaches subprocesses
    finally:
        torch.set_num_threads(1)
    # torch was imported before the policy was set: libgomp has read it already; the line says so.
    assert capsys.readouterr().err.strip().endswith("OMP_WAIT_POLICY default (torch was imported before it could be set)")


def _run(code, **env):
    e = {**os.environ, "PYTHONPATH": ROOT, **env}
    e.pop("OMP_WAIT_POLICY", None)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


def test_cli_sets_policy_before_torch_loads():
    """Parsing any command imports no torch, so main() sets the policy before libgomp reads it."""
    code = ("import sys; from faap.cli import build_parser\n"
            "for argv in (['bench'], ['train', '--variant', 'x', '--out', 'o'], ['sweep', 'worker', 's'],\n"
            "             ['report', 's', '--out', 'o'], ['eval', '--run', 'r'], ['detector', 'train-demo', '--data', 'd',"
            " '--out', 'o'], ['data', 'oracle', 'r']):\n"
            "    assert build_parser().parse_args(argv).threads is None, argv\n"
            "assert 'torch' not in sys.modules\n"
            "from faap.threads import configure_threads; configure_threads()\n"
            "import torch, os; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    r = _run(code, FAAP_THREADS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "PASSIVE"]
    assert r.stderr.strip() == f"faap: 1 CPU thread(s) of {available_cores()} core(s) available; OMP_WAIT_POLICY PASSIVE"


def test_bad_thread_counts_exit_2_with_one_line():
    r = _run("import sys; from faap.cli import main; sys.exit(main(['bench', '--threads', '0']))")
    assert r.returncode == 2 and r.stderr.strip() == "faap: error: --threads must be >= 1 (got 0)"
    r = _run("import sys; from faap.cli import main; sys.exit(main(['report', '--out', 'x']))", FAAP_THREADS="many")
    assert r.returncode == 2 and r.stderr.strip() == "faap: error: FAAP_THREADS must be a positive integer (got 'many')"


def test_deferred_line_comes_with_the_first_network_only(capsys):
    """Bad input must still end in one line: main() defers the thread line to the first forward."""
    lin = torch.nn.Linear(2, 2)
    configure_threads(1, defer=True)
    assert capsys.readouterr().err == ""
    lin(torch.ones(2))
    lin(torch.ones(2))
    assert capsys.readouterr().err.startswith("faap: 1 CPU thread(s) of")  # once
    configure_threads(1, defer=True)
    end_announcement()  # the command ended (e.g. rejected its input) before any network ran
    lin(torch.ones(2))
    assert capsys.readouterr().err == ""
