"""``faap bench``: each variant's training-step time as a ratio to one bare detector step.

The reference step is one detector forward + backward to the input pixels with the
detector's own set loss on the same batch. Each variant is timed with the suite's step
(one batched detector forward, features reused by the discriminator steps) and with a
faithful re-creation of the original loop structure (:func:`legacy_step`: one detector
forward per group, and for the adversarial variant G and the detector recomputed for
every one of the k_d discriminator steps). Ratios are measured in one process, on one
batch, so machine noise largely cancels.
"""

from __future__ import annotations

import statistics
import time

import torch

from faap.data.transforms import normalize
from faap.detector import load_detector
from faap.engine import current_eps, female_first, forward, generator_update, perturb_groups, train_step
from faap.generator import build_generator
from faap.runtime import resolve_device
from faap.variants import VARIANTS, StepState, make_config


def legacy_step(batch, generator, detector, variant, opt_g, epoch: int, device, recompute: bool = True,
                per_group: bool = True) -> dict:
    """The original iteration: D steps on freshly recomputed G + detector outputs, then a new
    forward for G's step; the detector runs once per group."""
    x, mask, targets, n_female = female_first(batch, device)
    eps = current_eps(variant.cfg, epoch)
    hooks = {"class_probs": detector.class_probs}  # as the suite's step gives them

    def recompute_features():
        with torch.no_grad():
            return forward(generator, detector, variant, x, mask, n_female, eps, per_group)[0].features

    if recompute:  # k_d recomputations for the D steps, then a fresh forward for G's step
        adversary = StepState(None, n_female, epoch, {**hooks, "recompute_features": recompute_features})
        logs = variant.before_generator_step(adversary)
        out, delta = forward(generator, detector, variant, x, mask, n_female, eps, per_group)
    else:
        out, delta = forward(generator, detector, variant, x, mask, n_female, eps, per_group)
        logs = variant.before_generator_step(StepState(out, n_female, epoch, hooks))
    state = StepState(out, n_female, epoch, hooks)
    logs.update(generator_update(state, targets, delta, mask, detector, variant, opt_g))
    return logs


def random_batch(n: int, size: int, seed: int = 0) -> dict:
    """Half female, half male random images with 1-3 random boxes each (labels 0)."""
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        cxcy = torch.rand(k, 2, generator=g) * 0.5 + 0.25
        wh = torch.rand(k, 2, generator=g) * 0.3 + 0.1
        targets.append({"boxes": torch.cat([cxcy, wh], 1), "class_labels": torch.zeros(k, dtype=torch.long),
                        "image_id": i, "orig_size": (size, size), "size": (size, size), "group": i % 2})
    return {"pixel_values": normalize(torch.rand(n, 3, size, size, generator=g)),
            "pixel_mask": torch.ones(n, size, size, dtype=torch.long),
            "groups": torch.tensor([t["group"] for t in targets]), "targets": targets}


def _time(fn, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(detector_spec="demo", device="auto", batch_size=8, image_size=128, steps=20, warmup=3, amp="none",
        channels_last=False) -> list[dict]:
    dev = resolve_device(device)
    detector = load_detector(detector_spec, dev)
    batch = random_batch(batch_size, image_size)
    x0, mask, targets, n_female = female_first(batch, dev)

    def bare():
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp == "bf16" and dev.type == "cuda"):
            out = detector(x, mask)
        loss = detector.set_loss(out, targets)[0]
        loss.backward()

    torch.manual_seed(0)
    gen0 = build_generator(channels_last, dev)

    def generator_only():
        x_adv, _ = perturb_groups(gen0, x0, mask, n_female, 0.1)
        x_adv.sum().backward()

    rows = [{"what": "bare detector fwd+bwd", "ms": 1000 * _time(bare, steps, warmup, dev)},
            {"what": "generator fwd+bwd alone (both groups)", "ms": 1000 * _time(generator_only, steps, warmup, dev)}]
    for name in VARIANTS:
        for label, step in (("suite", train_step), ("original loop", legacy_step)):
            torch.manual_seed(0)
            cfg = make_config(name, {"amp": amp, "channels_last": channels_last, "data": "-"})
            gen = build_generator(channels_last, dev)
            variant = VARIANTS[name](cfg, detector.hidden_dim).to(dev)
            variant.optimizers = variant.make_optimizers()
            opt = torch.optim.Adam(list(gen.parameters()) + variant.g_parameters(), lr=cfg.lr_g)
            ms = 1000 * _time(lambda: step(batch, gen, detector, variant, opt, 10, dev), steps, warmup, dev)
            rows.append({"what": f"{name} ({label})", "ms": ms})
    for r in rows:
        r["ratio"] = r["ms"] / rows[0]["ms"]
        # What a step costs beyond the two networks it must run (G and the detector).
        r["overhead_ms"] = r["ms"] - rows[0]["ms"] - rows[1]["ms"] if r is not rows[0] and r is not rows[1] else None
    return rows


def main(args) -> None:
    rows = run(args.detector, args.device, args.batch_size, args.image_size, args.steps, args.warmup, args.amp,
               args.channels_last)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; detector {args.detector}; batch {args.batch_size} x {args.image_size}px; "
          f"median of {args.steps} steps; amp {args.amp}; channels_last {args.channels_last}")
    print(f"{'step':40s} {'ms':>9s} {'x bare':>7s} {'- G - bare (ms)':>16s}")
    for r in rows:
        extra = f"{r['overhead_ms']:16.1f}" if r["overhead_ms"] is not None else ""
        print(f"{r['what']:40s} {r['ms']:9.1f} {r['ratio']:7.2f} {extra}")
