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

import ctypes
import gc
import statistics
import sys
import time

import torch

from faap.data.transforms import normalize
from faap.detector import load_detector
from faap.engine import (clean_outputs, current_eps, female_first, forward, generator_update, perturb_groups,
                         train_step)
from faap.errors import UserError
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
    state = StepState(out, n_female, epoch, hooks, clean=clean_outputs(detector, variant, x, mask))
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


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class PeakMemory:
    """Peak memory (MiB) of the code run inside the block, as ``self.mib``.

    CUDA: ``max_memory_allocated`` (absolute: weights, batch and activations). CPU (Linux): the
    peak resident set above the one at entry; ``ru_maxrss`` cannot be reset between rows, so the
    kernel's high-water mark is reset through ``/proc/self/clear_refs`` instead (None where it
    cannot be, e.g. macOS).
    """

    def __init__(self, device):
        self.device, self.mib, self._start = torch.device(device), None, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        gc.collect()
        # Trap: glibc keeps freed blocks (below its mmap threshold, up to 32 MiB each) in the heap;
        # a row reusing what the previous row freed would show no growth. Hand them back first.
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set
            self._start = _proc_status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._start is not None:
            self.mib = (_proc_status_kib("VmHWM") - self._start) / 1024


def _measure(fn, steps: int, warmup: int, device) -> dict:
    with PeakMemory(device) as mem:
        seconds = _time(fn, steps, warmup, device)
    return {"ms": 1000 * seconds, "peak_mib": mem.mib}


def _generator(settings: dict, dev, compile_g: bool):
    """G as a training run builds it from ``settings``; with ``compile_g``, torch.compile'd."""
    gen = build_generator(settings["channels_last"], dev, checkpointing=settings["g_checkpointing"])
    if not compile_g:
        return gen
    # Bench only: a compiled G ignores forward hooks added after compiling (dynamo skips hook
    # guards), so BatchNormUpdates records nothing; timing is unaffected, training would be.
    return torch.compile(gen)


def _progress(done: int, total: int, row: dict) -> None:
    """One stderr line per finished row: a real-size bench takes many minutes."""
    print(f"faap bench: [{done}/{total}] {row['what']}: {row['ms'] / 1000:.2f} s/step", file=sys.stderr, flush=True)


def run(detector_spec="demo", device="auto", batch_size=8, image_size=128, steps=20, warmup=3, amp="none",
        channels_last=False, g_checkpointing=False, compile_g=False, variants=None, progress=None) -> list[dict]:
    """The bench's rows: bare detector, G alone, then each of ``variants`` (default: every registered
    one) in the suite's step and the original loop. ``progress(done, total, row)`` is called per row."""
    dev = resolve_device(device)
    if compile_g:  # where inductor cannot compile (no C++ compiler, old GPU), run G eagerly, with a warning
        torch._dynamo.config.suppress_errors = True
    detector = load_detector(detector_spec, dev)
    batch = random_batch(batch_size, image_size)
    x0, mask, targets, n_female = female_first(batch, dev)
    settings = {"amp": amp, "channels_last": channels_last, "g_checkpointing": g_checkpointing, "data": "-"}
    names = list(VARIANTS) if variants is None else list(variants)
    steps_to_time = (("suite", train_step), ("original loop", legacy_step))
    total, rows = 2 + len(steps_to_time) * len(names), []

    def add(row):
        rows.append(row)
        if progress:
            progress(len(rows), total, row)

    def bare():
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cuda", torch.bfloat16, enabled=amp == "bf16" and dev.type == "cuda"):
            out = detector(x, mask)
        loss = detector.set_loss(out, targets)[0]
        loss.backward()

    torch.manual_seed(0)
    gen0 = _generator(settings, dev, compile_g)

    def generator_only():
        x_adv, _ = perturb_groups(gen0, x0, mask, n_female, 0.1)
        x_adv.sum().backward()

    add({"what": "bare detector fwd+bwd", **_measure(bare, steps, warmup, dev)})
    add({"what": "generator fwd+bwd alone (both groups)", **_measure(generator_only, steps, warmup, dev)})
    del gen0
    for name in names:
        for label, step in steps_to_time:
            torch.manual_seed(0)
            cfg = make_config(name, settings)
            gen = _generator(settings, dev, compile_g)
            variant = VARIANTS[name](cfg, detector.hidden_dim).to(dev)
            variant.optimizers = variant.make_optimizers()
            opt = torch.optim.Adam(list(gen.parameters()) + variant.g_parameters(), lr=cfg.lr_g)
            add({"what": f"{name} ({label})",
                 **_measure(lambda: step(batch, gen, detector, variant, opt, 10, dev), steps, warmup, dev)})
            del gen, variant, opt  # free before the next row's peak is measured
    return _with_ratios(rows)


def _with_ratios(rows: list[dict]) -> list[dict]:
    """Each row's time as a multiple of the bare step, and what it costs beyond G and the detector."""
    for r in rows:
        r["ratio"] = r["ms"] / rows[0]["ms"]
        r["overhead_ms"] = r["ms"] - rows[0]["ms"] - rows[1]["ms"] if r is not rows[0] and r is not rows[1] else None
    return rows


def format_table(rows: list[dict], args) -> str:
    """The header line and the table ``faap bench`` prints (and ``--out`` writes)."""
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    memory = "CUDA max allocated" if dev.type == "cuda" else "peak RSS growth"
    lines = [f"device: {name}; detector {args.detector}; batch {args.batch_size} x {args.image_size}px; "
             f"median of {args.steps} steps; amp {args.amp}; channels_last {args.channels_last}; "
             f"g_checkpointing {args.g_checkpointing}; compile_g {args.compile_g}; peak MiB: {memory}",
             f"{'step':40s} {'ms':>9s} {'x bare':>7s} {'- G - bare (ms)':>16s} {'peak MiB':>9s}"]
    for r in rows:
        extra = f"{r['overhead_ms']:16.1f}" if r["overhead_ms"] is not None else " " * 16
        peak = f"{r['peak_mib']:9.0f}" if r["peak_mib"] is not None else f"{'n/a':>9s}"
        lines.append(f"{r['what']:40s} {r['ms']:9.1f} {r['ratio']:7.2f} {extra} {peak}")
    return "\n".join(lines)


def parse_variants(text: str | None) -> list[str] | None:
    """``--variants a,b``: registered names only (None: every registered variant)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise UserError(f"bench --variants: unknown variant(s) {', '.join(unknown) or '(none given)'}; "
                        f"registered: {', '.join(VARIANTS)}")
    return names


def main(args) -> None:
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 2 or args.image_size < 32:
        raise UserError("bench needs --steps >= 1, --warmup >= 0, --batch-size >= 2 (both groups) and "
                        "--image-size >= 32")
    variants = parse_variants(args.variants)
    rows = run(args.detector, args.device, args.batch_size, args.image_size, args.steps, args.warmup, args.amp,
               args.channels_last, args.g_checkpointing, args.compile_g, variants, progress=_progress)
    table = format_table(rows, args)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
