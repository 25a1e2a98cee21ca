"""G against the original code's generator: parameterisation, checkpoint layout, padding."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from faap.data.transforms import normalize, pixel_bounds
from faap.errors import UserError
from faap.generator import N_PARAMETERS, PerturbationGenerator, load_generator, perturb


# ---- a reference written from the original's models.py (eeshape/faap_gan) -----------------------
# Same module names and layer order as the original; it returns epsilon * tanh(out_conv(.)) as the
# original's forward does, so the suite's eps * tanh(G(x)) must equal it.
class _RefConvBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.Conv2d(cout, cout, kernel_size=3, padding=1),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.net(x)


class _RefUpBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x, hw):
        return F.relu(self.bn(self.conv(F.interpolate(x, size=hw, mode="bilinear", align_corners=False))))


class _RefGenerator(nn.Module):
    def __init__(self, c=32, epsilon=0.05):
        super().__init__()
        self.epsilon = epsilon
        self.down1, self.down2 = _RefConvBlock(3, c), _RefConvBlock(c, 2 * c, stride=2)
        self.down3, self.bottleneck = _RefConvBlock(2 * c, 4 * c, stride=2), _RefConvBlock(4 * c, 4 * c)
        self.up2, self.up1 = _RefUpBlock(4 * c, 2 * c), _RefUpBlock(2 * c, c)
        self.out_conv = nn.Conv2d(c, 3, kernel_size=3, padding=1)

    def forward(self, x):
        h1 = self.down1(x)
        h2 = self.down2(h1)
        h3 = self.bottleneck(self.down3(h2))
        u1 = self.up1(self.up2(h3, h2.shape[-2:]) + h2, h1.shape[-2:]) + h1
        return self.epsilon * torch.tanh(self.out_conv(u1))


def _randomised_reference(eps):
    torch.manual_seed(7)
    ref = _RefGenerator(epsilon=eps)
    with torch.no_grad():  # non-default everything, BatchNorm running statistics included
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        for name, b in ref.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.2)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return ref.eval()


def test_parameter_count_is_the_originals():
    assert sum(p.numel() for p in PerturbationGenerator().parameters()) == N_PARAMETERS == 676_899
    assert sum(p.numel() for p in _RefGenerator().parameters()) == N_PARAMETERS


@pytest.mark.parametrize("layout", ["training", "bare", "ddp"])
def test_original_checkpoint_loads_and_perturbs_identically(tmp_path, layout):
    eps = 0.09
    ref = _randomised_reference(eps)
    state = ref.state_dict()
    if layout == "training":  # as the original's training scripts save it (7th: discriminator, opt_d too)
        obj = {"epoch": 23, "generator": state, "discriminator": {}, "opt_g": {}, "opt_d": {}, "args": {"epsilon": 0.05}}
    elif layout == "ddp":
        obj = {"generator": {f"module.{k}": v for k, v in state.items()}}
    else:
        obj = state
    path = str(tmp_path / "epoch_0023.pth")
    torch.save(obj, path)
    gen, _ = load_generator(path)
    assert not gen.training
    x = normalize(torch.rand(2, 3, 45, 61))
    mask = torch.ones(2, 45, 61, dtype=torch.long)
    with torch.no_grad():
        ours, _ = perturb(gen, x, mask, eps)
        lo, hi = pixel_bounds()
        theirs = torch.max(torch.min(x + ref(x), hi), lo)  # the original's clamp_normalized(x + G(x))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert 0.5 * eps < (ours - x).abs().max() <= eps + 1e-6  # the randomised weights do perturb


def test_bad_generator_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_generator(str(tmp_path / "missing.pth"))
    odd = {k.replace("down1", "enc1"): v for k, v in _RefGenerator().state_dict().items()}
    torch.save({"generator": odd}, tmp_path / "odd.pth")
    with pytest.raises(UserError, match="unknown generator key layout"):
        load_generator(str(tmp_path / "odd.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read generator checkpoint"):
        load_generator(str(tmp_path / "junk.pth"))


def _padded_batch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, 48)
    mask = torch.ones(2, 40, 48, dtype=torch.long)
    mask[1, 30:, :] = 0
    mask[1, :, 36:] = 0
    x[1][:, mask[1] == 0] = 0.0  # the collate pads with zeros
    return x, mask


@pytest.mark.parametrize("perturb_padding", [True, False])
def test_padding_is_perturbed_only_when_asked(perturb_padding):
    x, mask = _padded_batch()
    gen = PerturbationGenerator().eval()
    with torch.no_grad():
        x_adv, delta = perturb(gen, x, mask, 0.1, perturb_padding)
        lo, hi = pixel_bounds()
        everywhere = torch.max(torch.min(x + 0.1 * torch.tanh(gen(x)), hi), lo)
    pad = (mask == 0).unsqueeze(1).expand_as(x)
    assert torch.equal(x_adv[~pad], everywhere[~pad])  # real pixels: the same either way
    if perturb_padding:
        assert torch.equal(x_adv, everywhere) and delta[pad].abs().max() > 0
    else:
        assert torch.equal(delta[pad], torch.zeros_like(delta[pad]))


# ---- activation checkpointing (g_checkpointing) ------------------------------------------------
def _step(checkpointing: bool, channels_last: bool = False):
    """One train-mode forward + backward of G (fixed weights and inputs); its gradients and BN buffers."""
    torch.manual_seed(0)
    g = PerturbationGenerator(channels_last=channels_last, checkpointing=checkpointing).train()
    x = normalize(torch.rand(3, 3, 40, 52, generator=torch.Generator().manual_seed(1)))
    x_adv, _ = perturb(g, x, torch.ones(3, 40, 52, dtype=torch.long), 0.1)
    (x_adv ** 2).sum().backward()
    return {n: p.grad.clone() for n, p in g.named_parameters()}, {k: v.clone() for k, v in g.state_dict().items()}


@pytest.mark.parametrize("channels_last", [False, True])
def test_checkpointing_gives_the_same_gradients_and_running_stats(channels_last):
    grads, buffers = _step(False, channels_last)
    grads_ck, buffers_ck = _step(True, channels_last)
    assert len(grads) == 42 and set(grads_ck) == set(grads)
    for name, g in grads.items():
        torch.testing.assert_close(grads_ck[name], g, rtol=0, atol=1e-6, msg=name)
        assert g.abs().sum() > 0, name  # a real gradient, not zeros on both sides
    # The recomputation in backward must not take a second running-statistics update.
    for name, b in buffers.items():
        torch.testing.assert_close(buffers_ck[name], b, rtol=0, atol=1e-7, msg=name)
    assert int(buffers_ck["down1.net.1.num_batches_tracked"]) == 1


def test_checkpointing_is_off_by_default_and_wired_from_the_config():
    from faap.generator import build_generator
    from faap.variants import make_config

    assert PerturbationGenerator().checkpointing is False
    cfg = make_config("infonce", {"data": "-"})
    assert cfg.g_checkpointing is False
    assert build_generator(cfg.channels_last, "cpu", checkpointing=cfg.g_checkpointing).checkpointing is False
    on = make_config("infonce", {"data": "-", "g_checkpointing": True})
    g = build_generator(on.channels_last, "cpu", checkpointing=on.g_checkpointing)
    assert g.checkpointing is True
    # Off in evaluation (eval mode, no_grad): nothing to save for backward, the plain forward runs.
    twin = PerturbationGenerator()
    twin.load_state_dict(g.state_dict())
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(g.eval()(x), twin.eval()(x))
