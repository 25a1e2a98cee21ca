"""``faap sweep ...`` subcommands (registered by :mod:`faap.cli`)."""

from __future__ import annotations

import functools
import os
import sys

from faap.errors import UserError

WANDB_MODES = ["auto", "online", "offline", "off"]


def _common(p, study_arg=True):
    if study_arg:
        p.add_argument("study", help="study name")
    p.add_argument("--storage", help="journal file path or RDB URL (default: runs/studies/journal.log)")


def _fault(p):
    p.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats of a running trial")
    p.add_argument("--grace", type=float, default=300.0, help="seconds without heartbeat before a trial is re-run")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES, help="W&B mode (auto: online if logged in)")
    p.add_argument("--storage-timeout", type=float,
                   help="seconds a worker retries an unreachable RDB storage before it stops; must be below "
                   f"--grace minus --heartbeat (default: {DEFAULT_STORAGE_TIMEOUT:g}, or half of that room if it is "
                   "less)")


DEFAULT_STORAGE_TIMEOUT = 180.0


def _check_fault_settings(args) -> None:
    """Heartbeat < grace, and heartbeat + storage timeout < grace: a trial's last stamp can be a heartbeat
    old when its worker loses the storage, and a worker that came back after the others' grace would find
    its trial re-run by another worker in the same folder. Sets the default timeout in ``args`` (spawned
    workers get the same value)."""
    if not 0 < args.heartbeat < args.grace:
        raise UserError(f"--heartbeat ({args.heartbeat:g} s) must be > 0 and below --grace ({args.grace:g} s): "
                        "running trials would look lost between two heartbeats")
    if args.storage_timeout is None:
        room = args.grace - args.heartbeat
        args.storage_timeout = DEFAULT_STORAGE_TIMEOUT if DEFAULT_STORAGE_TIMEOUT < room else room / 2
    elif not 0 < args.storage_timeout < args.grace - args.heartbeat:
        raise UserError(f"--storage-timeout ({args.storage_timeout:g} s) must be > 0 and below --grace minus "
                        f"--heartbeat ({args.grace:g} - {args.heartbeat:g} s): a worker waiting out a longer outage "
                        "would find its trial re-run by another worker")


def _placement(p):
    p.add_argument("--workers", type=int, help="worker processes on this machine (default: one per GPU, else 1; "
                   "0 with 'run': create the study only)")
    p.add_argument("--gpus", help="GPUs to use: indices like 0,2, 'all' (default when CUDA is visible) or 'none'")
    p.add_argument("--per-gpu", type=int, help="workers per GPU (default 1)")


def _needs_storage(func):
    """Check an RDB storage before anything else: one line (password masked) and exit 2 if unreachable.
    Where every sweep command (a spawned worker too) starts: Optuna's own log goes quiet here."""
    @functools.wraps(func)
    def checked(args):
        from ablations.storage import backend_for, set_storage_timeout
        from ablations.study import quiet_optuna

        if hasattr(args, "storage_timeout"):
            _check_fault_settings(args)
            set_storage_timeout(args.storage_timeout)
        if args.storage:
            backend_for(args.storage).check_reachable()
        quiet_optuna()
        return func(args)
    return checked


def add_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="ablation studies (Optuna)").add_subparsers(dest="sweep_command", required=True)

    r = sw.add_parser("run", help="create (or join) the study of a spec and run workers")
    r.add_argument("spec", help="sweeps/NAME.yaml")
    _common(r, study_arg=False)
    r.add_argument("--study", help="study name (default: the spec's)")
    _placement(r)
    r.add_argument("--n-trials", type=int, help="trial budget (default: the spec's)")
    r.add_argument("--data", help="dataset root (default: the spec's)")
    r.add_argument("--detector", help="detector spec (default: the spec's)")
    r.add_argument("--base-config", help="config file or built-in name; 'none' drops the spec's")
    _fault(r)
    r.set_defaults(func=_needs_storage(_run))

    w = sw.add_parser("worker", help="one worker of an existing study (what run/resume start)")
    _common(w)
    w.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: $FAAP_THREADS, "
                   "else $OMP_NUM_THREADS, else the cores available to the process)")
    w.add_argument("--max-trials", type=int)
    w.add_argument("--reclaim-running", action="store_true")
    _fault(w)
    w.set_defaults(func=_needs_storage(_worker))

    rs = sw.add_parser("resume", help="continue a study: re-run lost trials from their checkpoints, finish the budget")
    _common(rs)
    _placement(rs)
    rs.add_argument("--reclaim-running", action="store_true",
                    help="treat every RUNNING trial as lost (when no worker of the study is alive)")
    _fault(rs)
    rs.set_defaults(func=_needs_storage(_resume))

    st = sw.add_parser("status", help="trials, states, params, values, best, running and failed")
    _common(st)
    st.set_defaults(func=_needs_storage(_status))

    c = sw.add_parser("cost", help="where a study's time went: training, validation, runner overhead, pruning savings")
    _common(c)
    c.set_defaults(func=_needs_storage(_cost))

    d = sw.add_parser("dashboard", help="optuna-dashboard on the storage, bound to 127.0.0.1")
    _common(d, study_arg=False)
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(func=_needs_storage(_dashboard))


def _start(name, url, args, envs, reclaim=False) -> None:
    """Run the workers of ``envs`` (from :func:`_placement_envs`): one CPU worker in this process, else processes."""
    from ablations.runner import resume_hint, spawn_workers

    extra = ["--heartbeat", str(args.heartbeat), "--grace", str(args.grace), "--storage-timeout",
             str(args.storage_timeout)] + (["--reclaim-running"] if reclaim else [])
    try:
        if len(envs) == 1 and "CUDA_VISIBLE_DEVICES" not in envs[0]:
            from ablations.worker import work

            work(name, url, args.wandb, heartbeat_interval=args.heartbeat, grace=args.grace, reclaim_running=reclaim)
        else:  # a pinned worker is a fresh process: CUDA reads CUDA_VISIBLE_DEVICES once, when it starts
            code = spawn_workers(name, url, envs, args.wandb, extra)
            if code:
                raise UserError(f"a worker exited with status {code}; see its output above")
    except KeyboardInterrupt:
        print(f"\ninterrupted: running trials were re-queued. Resume with:\n  {resume_hint(name, url)}", file=sys.stderr)
        raise
    _print_status(name, url)


def _placement_envs(args) -> list[dict]:
    """Each worker's environment, validated before anything is written (bad --gpus/--per-gpu: exit 2)."""
    from ablations.placement import placement, visible_gpus

    return placement(args.workers, args.gpus, args.per_gpu, visible_gpus(), os.cpu_count() or 1)


def _run(args) -> None:
    from ablations.runner import prepare, resume_hint

    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be >= 0 (got {args.workers})")
    envs = _placement_envs(args) if args.workers != 0 else []
    study, name = prepare(args.spec, args.storage, args.study, args.n_trials,
                          {"data": args.data, "detector": args.detector, "base_config": args.base_config})
    print(f"study '{name}' in {_where(args.storage)}; resume with: {resume_hint(name, args.storage)}", flush=True)
    if not envs:  # --workers 0: create only (workers on other machines join with `faap sweep worker`)
        print(f"created; start workers with: faap sweep worker {name}"
              + (f" --storage {_where(args.storage)}" if args.storage else ""), flush=True)
        return
    _start(name, args.storage, args, envs)


def _where(url) -> str:
    from ablations.storage import mask_url

    return mask_url(url) if url else "the embedded storage"


def _worker(args) -> None:
    from ablations.worker import work

    work(args.study, args.storage, args.wandb, args.max_trials, args.heartbeat, args.grace,
         reclaim_running=args.reclaim_running)


def _resume(args) -> None:
    from ablations.study import load

    envs = _placement_envs(args)
    load(args.study, args.storage)  # exists?
    _start(args.study, args.storage, args, envs, reclaim=args.reclaim_running)


def _print_status(name, url) -> None:
    import pandas as pd

    from ablations.runner import status_frame

    (study, spec), df = status_frame(name, url)
    with pd.option_context("display.max_columns", 50, "display.width", 200, "display.max_colwidth", 60):
        print(df.to_string(index=False) if len(df) else "(no trials yet)")
    counts = df["state"].value_counts().to_dict() if len(df) else {}
    print("\nstates: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    clean = study.user_attrs.get("clean_baseline")
    if clean:
        print(f"clean detector: val AP gap {clean['val']['AP_gap']:+.4f}, test AP gap {clean['test']['AP_gap']:+.4f}")
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if done and len(spec.objectives) == 1:
        best = study.best_trial
        print(f"best trial {best.number}: {spec.objectives[0]['metric']} {best.value:+.4f} (val, mean of "
              f"{len(spec.seeds)} seed(s)) with {best.params}")
    elif done:
        print("Pareto front: trials " + ", ".join(str(t.number) for t in study.best_trials))


def _cost(args) -> None:
    from ablations.cost import print_cost

    print_cost(args.study, args.storage)


def _status(args) -> None:
    _print_status(args.study, args.storage)


def _dashboard(args) -> None:
    from optuna_dashboard import run_server

    from ablations.storage import backend_for

    storage = backend_for(args.storage).dashboard_storage()
    print(f"optuna-dashboard on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    run_server(storage, host="127.0.0.1", port=args.port)
