"""CPU threads and OpenMP wait policy of every process that computes: the one place the CLI
(``faap train/eval/bench/report/detector train-demo/data oracle``) and the sweep workers call.

Why: torch's OpenMP threads busy-wait at the end of every parallel region. With another
CPU-bound job on the machine a thread that lost its core keeps the others spinning for it,
and a step became ~20x slower instead of ~2x. ``OMP_WAIT_POLICY=PASSIVE`` makes waiting
threads sleep at once.

Trap: libgomp (torch's OpenMP runtime on Linux) reads ``OMP_WAIT_POLICY`` once, when
``import torch`` loads it; setting it in ``os.environ`` after that changes nothing for this
process (it still reaches subprocesses). :func:`configure_threads` therefore runs before
anything imports torch, and says so on its line when it came too late.
"""

from __future__ import annotations

import os
import sys

from faap.errors import UserError

THREADS_ENV = "FAAP_THREADS"
"""Environment variable giving the thread count when ``--threads`` is not given."""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a cgroup cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def resolve_threads(requested: int | None = None) -> int:
    """``requested`` (``--threads``), else ``$FAAP_THREADS``, else ``$OMP_NUM_THREADS`` (torchrun sets
    it to 1 for each of its processes), else the cores available."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads must be >= 1 (got {requested})")
        return requested
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if raw:
            if not raw.isdigit() or int(raw) < 1:
                raise UserError(f"{name} must be a positive integer (got '{raw}')")
            return int(raw)
    return available_cores()


_announcement = {}
"""The pending thread line and its hook (see :func:`configure_threads` with ``defer``)."""


def configure_threads(requested: int | None = None, stream=None, defer: bool = False) -> int:
    """Set torch's threads and the OpenMP wait policy; print one line on ``stream`` (stderr).

    ``defer``: print the line when the first network runs instead of now, so that a command
    rejecting its input still ends in exactly one line (the error). :func:`end_announcement`
    drops a line never printed.
    """
    threads = resolve_threads(requested)
    torch_loaded = "torch" in sys.modules
    policy_before = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # an explicit user choice (e.g. ACTIVE) is kept
    # Read by libgomp / OpenBLAS when they load (this process, if not yet) and by every subprocess.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    policy = os.environ["OMP_WAIT_POLICY"]
    if torch_loaded and policy_before is None:  # libgomp already read an empty policy: spinning stays on
        policy = "default (torch was imported before it could be set)"
    line = f"faap: {threads} CPU thread(s) of {available_cores()} core(s) available; OMP_WAIT_POLICY {policy}"

    def announce(*_):
        end_announcement()
        print(line, file=stream or sys.stderr, flush=True)

    end_announcement()
    if defer:
        _announcement["hook"] = torch.nn.modules.module.register_module_forward_pre_hook(announce)
    else:
        announce()
    return threads


def end_announcement() -> None:
    """Remove a deferred thread line's hook (printed or not)."""
    hook = _announcement.pop("hook", None)
    if hook is not None:
        hook.remove()
