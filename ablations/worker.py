"""A sweep worker: take trials (baselines first), run them, repeat until the study is done.

Fault tolerance, the same for the journal file and RDB storages:

* a heartbeat thread stamps the running trial (user attribute ``heartbeat``) every
  ``heartbeat_interval`` seconds;
* before taking a trial, a worker fails every RUNNING trial whose heartbeat is older
  than ``grace`` seconds (its worker was killed or lost) and enqueues it again with the
  same parameters and trial folder, so the retry resumes from the last epoch checkpoint;
* a trial that raises is recorded as FAIL with its reason and not retried; the study goes on;
* Ctrl-C fails the running trial as "interrupted", enqueues its retry, and says how to resume;
* an RDB storage that goes away is retried for ``--storage-timeout`` seconds
  (:mod:`ablations.faults`), then the worker stops and its trial stays RUNNING until it
  goes stale. ``--heartbeat`` plus ``--storage-timeout`` must stay below ``--grace`` (checked by
  ``faap sweep``): a worker that waits out a longer outage comes back to find its trial re-run by another.

Idle workers wait while other workers' trials run (one of them may go stale), looking again after
0.5 s, then 1, 2, ... s up to one heartbeat, and exit when nothing is waiting or running.
"""

from __future__ import annotations

import _thread
import os
import socket
import threading
import time
import traceback

import optuna
from optuna.trial import TrialState

from ablations.faults import StorageLost
from ablations.objective import run_trial
from ablations.placement import this_gpu
from ablations.spec import StudySpec
from ablations.storage import backend_for
from ablations.study import baseline_studies, load

LOST = "worker lost"
IDLE_FIRST_WAIT = 0.5
"""Seconds an idle worker first waits before looking for work again (doubling up to one heartbeat)."""


class Heartbeat:
    def __init__(self, storage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.lost: StorageLost | None = None

    def _beat(self):
        while not self.stop_event.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except StorageLost as e:
                # Training on without heartbeats would let another worker re-run this trial beside this one
                # (same folder) once the storage is back: stop the worker (the main thread sees self.lost).
                self.lost = e
                if not self.stop_event.is_set():
                    _thread.interrupt_main()
                return
            except Exception:  # the trial finished (or was taken over): nothing left to stamp
                return

    def __enter__(self):
        self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=5)


def _age(t, now: float) -> float:
    beat = t.user_attrs.get("heartbeat")
    return now - (beat if beat is not None else t.datetime_start.timestamp())


def fail_and_retry(study: optuna.Study, t, reason: str) -> None:
    """Mark a running trial FAIL with ``reason`` and enqueue a retry that resumes its folder."""
    storage = study._storage
    storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
    storage.set_trial_user_attr(t._trial_id, "retried", True)
    try:
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except Exception:  # finished meanwhile: no retry needed
        return
    keep = {k: t.user_attrs[k] for k in ("trial_dir", "grid_key", "role", "variant") if k in t.user_attrs}
    keep["retry_of"] = t.number
    keep["retry_history"] = t.user_attrs.get("retry_history", []) + [t.number]
    study.enqueue_trial(t.params, user_attrs=keep)


def reap_stale(study: optuna.Study, grace: float, reclaim_all: bool = False) -> list[int]:
    """Fail and re-enqueue RUNNING trials without a recent heartbeat (call under the study lock)."""
    now, reaped = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = _age(t, now)
        if reclaim_all or age > grace:
            fail_and_retry(study, t, f"{LOST}: no heartbeat for {age:.0f}s" if not reclaim_all
                           else f"{LOST}: reclaimed by 'faap sweep resume --reclaim-running'")
            reaped.append(t.number)
    return reaped


def budget_left(study: optuna.Study, spec: StudySpec) -> bool:
    """Whether a new trial may be asked for (grid: a point is waiting; else under n_trials; ``spec``: the study's)."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    if spec.sampler == "grid":
        return False
    counted = [t for t in trials if not (t.state == TrialState.FAIL and t.user_attrs.get("retried"))]
    return len(counted) < spec.n_trials


def _has_waiting(study) -> bool:
    return any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))


def _running(studies) -> bool:
    return any(s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) for s in studies)


def _print(message: str) -> None:
    print(message, flush=True)


def work(name: str, url: str | None, wandb_mode: str = "auto", max_trials: int | None = None,
         heartbeat_interval: float = 30.0, grace: float = 300.0, poll: float | None = None,
         reclaim_running: bool = False, log=_print) -> int:
    """Run trials of study ``name`` until none is left; return how many this worker ran."""
    from ablations.runner import ensure_clean_baseline, resolve_data

    stored = load(name, url)
    stored = stored._replace(spec=resolve_data(stored.spec))
    study, spec = stored
    studies = baseline_studies(stored, url) + [study]
    ensure_clean_baseline(stored, url)
    study_dir = backend_for(url).runs_dir(name)
    # Idle while others run: look again after 0.5 s, doubling up to one heartbeat (or ``poll``), so a worker
    # whose last trial ends just after another's exits at once, and a long wait costs few storage reads.
    longest = poll or max(1.0, heartbeat_interval)
    ran, tag, who = 0, f"[worker {os.getpid()}]", {"worker": f"{socket.gethostname()}:{os.getpid()}", "gpu": this_gpu()}
    wait = min(IDLE_FIRST_WAIT, longest)
    try:
        while max_trials is None or ran < max_trials:
            picked = _take(stored, studies, url, grace, reclaim_running, who, lambda m: log(f"{tag} {m}"))
            reclaim_running = False
            if picked is None:
                if _running(studies):
                    time.sleep(wait)
                    wait = min(2 * wait, longest)
                    continue
                break
            _run_one(*picked, spec, study_dir, wandb_mode, heartbeat_interval, tag, log)
            ran, wait = ran + 1, min(IDLE_FIRST_WAIT, longest)
    except StorageLost as e:
        from ablations.runner import resume_hint

        raise StorageLost(f"{e}: worker {os.getpid()} stopped; its running trial resumes from its checkpoint once "
                          f"the storage is back (any worker of the study, or {resume_hint(name, url)})") from None
    return ran


def _take(stored, studies, url, grace, reclaim_running, who, log):
    """Under the study lock: re-queue stale trials, then ask for a trial (baselines first); None if none is left."""
    study, spec = stored
    with backend_for(url).lock(study.study_name):
        for s in studies:
            reaped = reap_stale(s, grace, reclaim_running)
            if reaped:
                log(f"re-queued trial(s) {reaped} of {s.study_name}: {LOST}")
        for s in studies:
            if _has_waiting(s) or (s is study and budget_left(s, spec)):
                trial = s.ask()
                s._storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
                for key, value in who.items():  # which worker (host:pid) and GPU run it: `faap sweep status`
                    s._storage.set_trial_user_attr(trial._trial_id, key, value)
                return s, trial
    return None


def _run_one(s, trial, spec, study_dir, wandb_mode, heartbeat_interval, tag, log):
    variant = s.user_attrs.get("variant") if s.user_attrs.get("role") == "baseline" else None
    what = f"{s.study_name} trial {trial.number}"
    log(f"{tag} start {what}" + (f" (retry of {trial.user_attrs['retry_of']})" if "retry_of" in trial.user_attrs else ""))
    t0 = time.time()
    with Heartbeat(s._storage, trial._trial_id, heartbeat_interval) as beat:
        try:
            values = run_trial(trial, spec, study_dir, variant, {} if variant else None, wandb_mode,
                               progress=False, log=lambda m: log(f"{tag}{m}"))
        except optuna.TrialPruned as e:
            _tell(s, trial, TrialState.PRUNED, None, log)
            log(f"{tag} pruned {what}: {e}")
            return
        except KeyboardInterrupt:
            if beat.lost:  # the heartbeat thread gave up on the storage (not a Ctrl-C)
                raise beat.lost from None
            fail_and_retry(s, s._storage.get_trial(trial._trial_id), "interrupted (Ctrl-C)")
            raise
        except StorageLost:  # not the trial's fault: it stays RUNNING and is re-run from its checkpoint
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]
            s._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            s._storage.set_trial_user_attr(trial._trial_id, "traceback", traceback.format_exc()[-4000:])
            _tell(s, trial, TrialState.FAIL, None, log)
            log(f"{tag} FAILED {what}: {reason}")
            return
    trial.set_user_attr("trial_seconds", time.time() - t0)
    _tell(s, trial, TrialState.COMPLETE, values, log)
    log(f"{tag} done {what}: " + ", ".join(f"{o['metric']} {v:+.4f}" for o, v in zip(spec.objectives, values))
        + f" ({time.time() - t0:.0f}s)")


def _tell(study, trial, state, values, log):
    try:
        study.tell(trial, values, state=state) if state == TrialState.COMPLETE else study.tell(trial, state=state)
    except Exception as e:  # taken over as stale while we ran: the retry owns it now
        log(f"could not record trial {trial.number} ({type(e).__name__}: {e})")
