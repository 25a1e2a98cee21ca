"""``faap sweep ...`` subcommands (registered by :mod:`faap.cli`)."""

from __future__ import annotations

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


def add_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="ablation studies (Optuna)").add_subparsers(dest="sweep_command", required=True)

    r = sw.add_parser("run", help="create (or join) the study of a spec and run workers")
    r.add_argument("spec", help="sweeps/NAME.yaml")
    _common(r, study_arg=False)
    r.add_argument("--study", help="study name (default: the spec's)")
    r.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    r.add_argument("--n-trials", type=int, help="trial budget (default: the spec's)")
    r.add_argument("--data", help="dataset root (default: the spec's)")
    r.add_argument("--detector", help="detector spec (default: the spec's)")
    r.add_argument("--base-config", help="config file or built-in name; 'none' drops the spec's")
    _fault(r)
    r.set_defaults(func=_run)

    w = sw.add_parser("worker", help="one worker of an existing study (what run/resume start)")
    _common(w)
    w.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: $FAAP_THREADS, "
                   "else $OMP_NUM_THREADS, else the cores available to the process)")
    w.add_argument("--max-trials", type=int)
    w.add_argument("--reclaim-running", action="store_true")
    _fault(w)
    w.set_defaults(func=_worker)

    rs = sw.add_parser("resume", help="continue a study: re-run lost trials from their checkpoints, finish the budget")
    _common(rs)
    rs.add_argument("--workers", type=int, default=1)
    rs.add_argument("--reclaim-running", action="store_true",
                    help="treat every RUNNING trial as lost (when no worker of the study is alive)")
    _fault(rs)
    rs.set_defaults(func=_resume)

    st = sw.add_parser("status", help="trials, states, params, values, best, running and failed")
    _common(st)
    st.set_defaults(func=_status)

    c = sw.add_parser("cost", help="where a study's time went: training, validation, runner overhead, pruning savings")
    _common(c)
    c.set_defaults(func=_cost)

    d = sw.add_parser("dashboard", help="optuna-dashboard on the storage, bound to 127.0.0.1")
    _common(d, study_arg=False)
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(func=_dashboard)


def _start(name, url, args, reclaim=False) -> None:
    from ablations.runner import resume_hint, spawn_workers

    extra = ["--heartbeat", str(args.heartbeat), "--grace", str(args.grace)] + (["--reclaim-running"] if reclaim else [])
    try:
        if args.workers <= 1:
            from ablations.worker import work

            work(name, url, args.wandb, heartbeat_interval=args.heartbeat, grace=args.grace, reclaim_running=reclaim)
        else:
            code = spawn_workers(name, url, args.workers, args.wandb, extra)
            if code:
                raise UserError(f"a worker exited with status {code}; see its output above")
    except KeyboardInterrupt:
        print(f"\ninterrupted: running trials were re-queued. Resume with:\n  {resume_hint(name, url)}", file=sys.stderr)
        raise
    _print_status(name, url)


def _run(args) -> None:
    from ablations.runner import prepare, resume_hint

    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    study, name = prepare(args.spec, args.storage, args.study, args.n_trials,
                          {"data": args.data, "detector": args.detector, "base_config": args.base_config})
    print(f"study '{name}' in {args.storage or 'the embedded storage'}; resume with: {resume_hint(name, args.storage)}",
          flush=True)
    _start(name, args.storage, args)


def _worker(args) -> None:
    from ablations.worker import work

    work(args.study, args.storage, args.wandb, args.max_trials, args.heartbeat, args.grace,
         reclaim_running=args.reclaim_running)


def _resume(args) -> None:
    from ablations.study import load

    load(args.study, args.storage)  # exists?
    _start(args.study, args.storage, args, reclaim=args.reclaim_running)


def _print_status(name, url) -> None:
    import pandas as pd

    from ablations.runner import status_frame

    study, df = status_frame(name, url)
    spec = study.spec
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

    from ablations.storage import open_storage

    storage = open_storage(args.storage, create=False)
    print(f"optuna-dashboard on http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
    run_server(storage, host="127.0.0.1", port=args.port)
