"""Schedules: the perturbation budget eps and the detection weight beta per epoch; G's learning rate."""

from __future__ import annotations

import math

import torch


def epsilon_at(epoch: int, start: float = 0.05, peak: float = 0.10, final: float = 0.09,
               warmup_epochs: int = 8, hold_epochs: int = 6, cooldown_epochs: int = 10) -> float:
    """eps rises linearly ``start -> peak`` over epochs ``0 .. warmup_epochs-1``, holds ``peak``
    for ``hold_epochs``, then falls linearly to ``final`` over ``cooldown_epochs`` (and stays).

    With the defaults: 0.05 at epoch 0, 0.10 at 7..13, 0.099 at 14, 0.09 at 23.
    """
    if epoch < warmup_epochs:
        return start + (peak - start) * epoch / max(1, warmup_epochs - 1)
    last_hold = warmup_epochs + hold_epochs - 1
    if epoch <= last_hold:
        return peak
    return peak - (peak - final) * min(1.0, (epoch - last_hold) / max(1, cooldown_epochs))


def beta_at(epoch: int, start: float = 0.5, final: float = 0.6, epochs: int = 24) -> float:
    """beta rises linearly ``start -> final`` over the run (epoch ``epochs-1`` gets ``final``)."""
    return start + (final - start) * min(epoch, epochs - 1) / max(1, epochs - 1)


def warmup_cosine_factor(unit: int, warmup: int, total: int, min_ratio: float) -> float:
    """fix10/fix11's LambdaLR factor: ``(unit+1)/warmup`` during the warm-up, then a cosine from 1 down to
    ``min_ratio`` over the remaining ``total - warmup`` units (units: epochs or steps).

    The originals computed the cosine in float32 with pi as 3.14159265; this uses float64 and ``math.pi``
    (factors differ by under 1e-7).
    """
    if unit < warmup:
        return (unit + 1) / warmup
    progress = (unit - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * (1 + math.cos(progress * math.pi)) / 2


def lr_scheduler(optimizer, cfg, steps_per_epoch: int):
    """G's learning-rate scheduler from the config (None for 'constant'), counted in the units it steps in
    (``cfg.lr_step_every``: epochs, or steps = batches of the epoch, skipped ones included).

    Creating it sets the optimiser's learning rate to the schedule's first value; restoring a checkpoint
    then loads both the optimiser's and the scheduler's state.
    """
    per = steps_per_epoch if cfg.lr_step_every == "step" else 1
    total = cfg.epochs * per
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.lr_g * cfg.lr_min_ratio)
    if cfg.lr_schedule == "warmup_cosine":
        warmup = cfg.lr_warmup_epochs * per
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda unit: warmup_cosine_factor(unit, warmup, total, cfg.lr_min_ratio))
    return None
