"""An exponential moving average of G's and the variant's G-side parameters (fix10/fix11's ``EMAModel``).

The average covers parameters only, as the originals' did; BatchNorm running statistics (buffers)
come from the trained modules whenever averaged weights are put together (:meth:`EMA.averaged`).
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """``shadow = decay * shadow + (1 - decay) * param`` after every G step, starting from the initial
    weights. Keys are ``generator.NAME`` and ``variant.NAME`` (the variant's ``g_parameters`` only)."""

    def __init__(self, generator: nn.Module, variant: nn.Module, decay: float):
        self.decay = decay
        g_side = {id(p) for p in variant.g_parameters()}
        self.targets = {**{f"generator.{n}": p for n, p in generator.named_parameters()},
                        **{f"variant.{n}": p for n, p in variant.named_parameters() if id(p) in g_side}}
        self.shadow = {k: p.detach().clone() for k, p in self.targets.items()}

    @torch.no_grad()
    def update(self) -> None:
        shadow = list(self.shadow.values())
        torch._foreach_mul_(shadow, self.decay)
        torch._foreach_add_(shadow, [p.detach() for p in self.targets.values()], alpha=1 - self.decay)

    def averaged(self, prefix: str, module: nn.Module) -> dict:
        """``module``'s state dict (``prefix``: 'generator' or 'variant') with the averaged parameters in
        place of the trained ones (buffers and parameters the average does not cover: the module's own)."""
        state = module.state_dict()
        for key, value in self.shadow.items():
            owner, name = key.split(".", 1)
            if owner == prefix:
                state[name] = value.clone()
        return state

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        if state.keys() != self.shadow.keys():
            raise KeyError(f"EMA state holds {sorted(state)[:3]}..., expected {sorted(self.shadow)[:3]}...")
        for k, v in state.items():
            self.shadow[k].copy_(v)
