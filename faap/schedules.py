"""Per-epoch schedules of the perturbation budget eps and the detection weight beta."""

from __future__ import annotations


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
