"""Where the workers of one machine run: which GPU each sees, how many CPU threads each gets.

``faap sweep run/resume --gpus all|0,2|none --per-gpu K --workers N``:

* workers are pinned round-robin over the chosen GPUs, each seeing exactly one device
  through ``CUDA_VISIBLE_DEVICES`` (inside the worker it is ``cuda:0``);
* the CPU cores are divided among all workers (``OMP_NUM_THREADS`` and ``--threads``);
* default: one worker per visible GPU on a GPU machine; one CPU worker otherwise.

Trap: the indices the user gives count the devices this process sees. When
``CUDA_VISIBLE_DEVICES`` is already set (a Slurm allocation, a container), index 0 is its
first entry, not physical GPU 0, so the child gets that entry.
"""

from __future__ import annotations

import os

from faap.errors import UserError


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(value: str | None, visible: int) -> list[int] | None:
    """Device indices from ``--gpus`` (None: CPU workers)."""
    if value is None:
        return list(range(visible)) or None
    if value == "none":
        return None
    if visible == 0:
        raise UserError(f"--gpus {value}: no CUDA device is visible on this machine")
    if value == "all":
        return list(range(visible))
    try:
        gpus = [int(v) for v in value.split(",")]
    except ValueError:
        raise UserError(f"--gpus takes device indices like 0,1, 'all' or 'none' (got '{value}')") from None
    for g in gpus:
        if not 0 <= g < visible:
            raise UserError(f"--gpus: no GPU {g} here ({visible} visible: {','.join(map(str, range(visible)))})")
    if len(set(gpus)) != len(gpus):
        raise UserError(f"--gpus names a device twice ({value}); use --per-gpu K for several workers per GPU")
    return gpus


def placement(workers: int | None, gpus: str | None, per_gpu: int | None, visible: int, cores: int,
              env: dict | None = None) -> list[dict]:
    """The environment of each worker to start: ``CUDA_VISIBLE_DEVICES`` (GPU workers) and ``OMP_NUM_THREADS``.

    ``visible`` is the number of CUDA devices this process sees (injected by tests).
    """
    env = os.environ if env is None else env
    if per_gpu is not None and per_gpu < 1:
        raise UserError(f"--per-gpu must be >= 1 (got {per_gpu})")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1 (got {workers})")
    devices = parse_gpus(gpus, visible)
    if devices is None:
        if per_gpu is not None:
            raise UserError("--per-gpu goes with GPUs, and this run has none (no CUDA device, or --gpus none)")
        n = workers or 1
        hide = {"CUDA_VISIBLE_DEVICES": ""} if gpus == "none" else {}
        return [{**hide, "OMP_NUM_THREADS": str(max(1, cores // n))} for _ in range(n)]
    if workers is not None and per_gpu is not None and workers != len(devices) * per_gpu:
        raise UserError(f"--workers {workers} does not match {len(devices)} GPU(s) x --per-gpu {per_gpu}; "
                        f"give one of them")
    n = workers or len(devices) * (per_gpu or 1)
    names = physical_names(env, visible)
    threads = str(max(1, cores // n))
    return [{"CUDA_VISIBLE_DEVICES": names[devices[i % len(devices)]], "OMP_NUM_THREADS": threads} for i in range(n)]


def physical_names(env: dict, visible: int) -> list[str]:
    """What to put in a child's ``CUDA_VISIBLE_DEVICES`` for each device index this process sees."""
    inherited = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" in env and len(inherited) >= visible:
        return inherited[:visible]
    return [str(i) for i in range(visible)]


def this_gpu() -> str:
    """This worker's GPU as the machine names it: its pinned device, 'all' (unpinned) or 'cpu' (no CUDA)."""
    if not visible_gpus():
        return "cpu"
    return os.environ.get("CUDA_VISIBLE_DEVICES") or "all"
