"""The perturbation generator G: a small U-Net whose output is bounded by eps * tanh.

Modules and parameters are named and shaped as the original code's ``models.py``
(``down1.net.0.weight``, ``up2.bn.running_mean``, ``out_conv.bias``, ...; every convolution
carries a bias, 676,899 parameters), so the original's generator checkpoints load as they are
(:func:`generator_state_dict`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from faap.data.transforms import pixel_bounds
from faap.errors import UserError

N_PARAMETERS = 676_899
"""Parameters of G at base 32 (the original's count, convolution biases included)."""


class ConvBlock(nn.Module):
    """2 x [conv3x3 (bias), BN, ReLU]; the first conv carries the stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(x)


class UpBlock(nn.Module):
    """Bilinear resize to the skip's size, conv3x3 (bias), BN, ReLU, then add the skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.bn(self.conv(x)), inplace=True) + skip


@contextmanager
def _keep_running_stats(block: nn.Module):
    """Around a checkpointed block's recomputation in backward: its BatchNorm layers run in train
    mode again and would otherwise take a second momentum update of their running statistics."""
    layers = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(layers, saved):
                for buf, v in zip((m.running_mean, m.running_var, m.num_batches_tracked), values):
                    buf.copy_(v)


class PerturbationGenerator(nn.Module):
    """U-Net 3->32->64->128 (bottleneck 128) ->64->32->3; returns the raw map (before tanh).

    ``checkpointing`` (config ``g_checkpointing``): in training, each block keeps only its inputs
    and recomputes its activations in backward (less memory, about one more forward of G).
    """

    def __init__(self, base: int = 32, channels_last: bool = False, checkpointing: bool = False):
        super().__init__()
        self.channels_last = channels_last
        self.checkpointing = checkpointing
        self.down1 = ConvBlock(3, base, 1)
        self.down2 = ConvBlock(base, base * 2, 2)
        self.down3 = ConvBlock(base * 2, base * 4, 2)
        self.bottleneck = ConvBlock(base * 4, base * 4, 1)
        self.up2 = UpBlock(base * 4, base * 2)
        self.up1 = UpBlock(base * 2, base)
        self.out_conv = nn.Conv2d(base, 3, 3, 1, 1)

    def forward(self, x):
        if self.channels_last:  # NHWC convolutions: faster on recent GPUs and on CPU (oneDNN)
            x = x.contiguous(memory_format=torch.channels_last)
        h1 = self._run(self.down1, x)
        h2 = self._run(self.down2, h1)
        h3 = self._run(self.bottleneck, self._run(self.down3, h2))
        return self.out_conv(self._run(self.up1, self._run(self.up2, h3, h2), h1)).contiguous()

    def _run(self, block: nn.Module, *inputs):
        if not (self.checkpointing and self.training and torch.is_grad_enabled()):
            return block(*inputs)
        # Non-reentrant: the image input does not require grad, with which the reentrant variant
        # would return no parameter gradients at all.
        return checkpoint(block, *inputs, use_reentrant=False,
                          context_fn=lambda: (nullcontext(), _keep_running_stats(block)))


def build_generator(channels_last: bool = False, device="cpu", state: dict | None = None,
                    checkpointing: bool = False) -> PerturbationGenerator:
    """G on ``device``, its weights in NHWC when ``channels_last``, loaded from ``state`` when given,
    its blocks activation-checkpointed in training when ``checkpointing``: the one place G is built
    (training, re-evaluation, diagnostics, examples, bench)."""
    generator = PerturbationGenerator(channels_last=channels_last, checkpointing=checkpointing).to(device)
    if channels_last:
        generator = generator.to(memory_format=torch.channels_last)
    if state is not None:
        generator.load_state_dict(state)
    return generator


def perturb(generator: nn.Module, x: torch.Tensor, mask: torch.Tensor, eps: float, perturb_padding: bool = True):
    """``x' = clamp(x + eps * tanh(G(x)))`` inside the valid normalised pixel range.

    With ``perturb_padding`` (the original's behaviour) every pixel of the padded batch is
    perturbed; without it padding (``mask == 0``) is left untouched. Returns ``(x', delta)``
    with ``delta = x' - x`` measured after the clamp, i.e. the change the detector sees.
    """
    lo, hi = pixel_bounds(x.device)
    d = eps * torch.tanh(generator(x))
    if not perturb_padding:
        d = d * mask.unsqueeze(1).to(d.dtype)
    x_adv = torch.max(torch.min(x + d, hi), lo)
    return x_adv, x_adv - x


def generator_state_dict(obj, source: str = "checkpoint") -> dict:
    """G's state dict from a loaded checkpoint object: a suite run checkpoint, an original
    training checkpoint (``{"epoch", "generator", "discriminator" | "proj_head", "opt_g", "args"}``),
    or a bare generator state dict (as the original's eval script also accepted).

    DistributedDataParallel's ``module.`` prefix is removed. Keys must be exactly G's:
    anything else is a UserError naming the first missing or unexpected key.
    """
    state = obj.get("generator", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{source}: not a generator checkpoint (expected a state dict or a dict with 'generator')")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = PerturbationGenerator().state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise UserError(f"{source}: unknown generator key layout ({what}; {len(missing)} missing, "
                        f"{len(unexpected)} unexpected)")
    bad = [k for k in expected if state[k].shape != expected[k].shape]
    if bad:
        raise UserError(f"{source}: generator tensor '{bad[0]}' has shape {tuple(state[bad[0]].shape)}, "
                        f"expected {tuple(expected[bad[0]].shape)}")
    return state


def load_generator(path: str, device="cpu", channels_last: bool = False) -> tuple[nn.Module, dict]:
    """G (eval mode) from a checkpoint file of the suite or the original code; also the loaded object."""
    import os

    if not os.path.isfile(path):
        raise UserError(f"generator checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file: pickle, zip and torch raise many types
        raise UserError(f"cannot read generator checkpoint {path}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
    generator = build_generator(channels_last, device, generator_state_dict(obj, path))
    return generator.eval(), obj


class BatchNormUpdates:
    """Records the running-statistic updates G's BatchNorm layers make in train-mode forwards,
    so they can be applied again without recomputing G (:meth:`replay`).

    The original recomputed G on the same batch for each discriminator step; each pass saw the
    same inputs and parameters, so its batch statistics (and hence its momentum update
    ``r <- (1 - m) r + m b``) were identical. The increment ``m b`` is recovered exactly enough
    as ``r_after - (1 - m) r_before`` around each call, which costs no pass over activations.
    """

    def __init__(self, generator: nn.Module, enabled: bool = True):
        self.layers = [m for m in generator.modules() if enabled and isinstance(m, nn.modules.batchnorm._BatchNorm)
                       and m.training and m.track_running_stats]
        for m in self.layers:
            if m.momentum is None:  # cumulative averaging depends on the call count, not replayable this way
                raise ValueError("BatchNorm with momentum=None cannot be replayed")
        self.updates = {m: [] for m in self.layers}
        self._before, self._handles = {}, []

    def __enter__(self):
        for m in self.layers:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre(self, m, args):
        self._before[m] = (m.running_mean.clone(), m.running_var.clone())

    def _post(self, m, args, output):
        mean0, var0 = self._before.pop(m)
        keep = 1 - m.momentum
        self.updates[m].append((m.running_mean - keep * mean0, m.running_var - keep * var0))

    @torch.no_grad()
    def replay(self, times: int) -> None:
        """Apply each layer's recorded sequence of updates ``times`` more times, in call order."""
        for m in self.layers:
            keep = 1 - m.momentum
            for _ in range(times):
                for inc_mean, inc_var in self.updates[m]:
                    m.running_mean.mul_(keep).add_(inc_mean)
                    m.running_var.mul_(keep).add_(inc_var)
                    m.num_batches_tracked.add_(1)
