"""Epoch checkpoints: G, the variant's modules, every optimiser and LR scheduler, an EMA, RNG states, epoch and eps."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from faap.errors import UserError
from faap.rundir import RunDir


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def path_for(run_dir: str, epoch: int) -> str:
    return RunDir(run_dir).checkpoint_path(epoch)


def list_epochs(run_dir: str) -> list[int]:
    return RunDir(run_dir).checkpoint_epochs()


def _write(path: str, state: dict) -> str:
    """Write atomically (a killed process never leaves a truncated checkpoint)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def save(run_dir: str, epoch: int, eps: float, generator, variant, optimizers: dict, config: dict,
         schedulers: dict | None = None, ema=None) -> str:
    """With an EMA (:class:`faap.ema.EMA`), ``generator`` and ``variant`` hold the averaged weights, the
    ones every evaluation reads (``faap eval``, the diagnostics), and ``live`` the trained ones a resumed
    run continues from (:func:`trained_weights`)."""
    state = {"epoch": epoch, "eps": eps, "generator": generator.state_dict(), "variant": variant.state_dict(),
             "optimizers": {k: o.state_dict() for k, o in optimizers.items()}, "rng": rng_state(),
             "schedulers": {k: s.state_dict() for k, s in (schedulers or {}).items()}, "config": config}
    if ema is not None:
        state.update(generator=ema.averaged("generator", generator), variant=ema.averaged("variant", variant),
                     live={"generator": state["generator"], "variant": state["variant"]}, ema=ema.state_dict())
    return _write(path_for(run_dir, epoch), state)


def trained_weights(state: dict) -> dict:
    """``{"generator", "variant"}`` state dicts a resumed run continues from (not the EMA's averages)."""
    return state.get("live", state)


def save_generator(run_dir: str, epoch: int, eps: float, generator, config: dict) -> str:
    """A checkpoint of G alone (a judged foreign checkpoint: no variant or optimiser state to resume)."""
    return _write(path_for(run_dir, epoch), {"epoch": epoch, "eps": eps, "generator": generator.state_dict(),
                                             "variant": {}, "optimizers": {}, "config": config})


def load(run_dir: str, epoch: int | None = None, map_location="cpu") -> dict:
    epochs = list_epochs(run_dir)
    if not epochs:
        raise UserError(f"no checkpoints in {os.path.join(run_dir, 'checkpoints')}")
    if epoch is None:
        epoch = epochs[-1]
    if epoch not in epochs:
        raise UserError(f"no checkpoint for epoch {epoch} in {run_dir} (have {epochs[0]}..{epochs[-1]})")
    return torch.load(path_for(run_dir, epoch), map_location=map_location, weights_only=False)


def prune(run_dir: str, keep: set[int]) -> None:
    """Delete checkpoints of epochs not in ``keep``."""
    for e in list_epochs(run_dir):
        if e not in keep:
            os.remove(path_for(run_dir, e))
