"""faap bench: peak memory per row, activation checkpointing and its table."""

import argparse

import pytest
import torch

from faap.bench import PeakMemory, format_table, run
from faap.cli import main
from faap.variants import VARIANTS


def test_peak_memory_measures_what_the_block_allocates():
    torch.ones(16)  # first call in a process pages in torch's code (about 8 MiB of RSS): not the block's
    with PeakMemory("cpu") as quiet:
        torch.ones(16)
    with PeakMemory("cpu") as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert quiet.mib < 8
    assert 63 < mem.mib < 64 + 8
    with PeakMemory("cpu") as again:  # freed memory was handed back: the same allocation counts again
        y = torch.ones(64 * 2**20 // 4)
        del y
    assert 63 < again.mib < 64 + 8


def test_bench_rows_with_and_without_g_checkpointing():
    kw = dict(batch_size=2, image_size=64, steps=1, warmup=1, device="cpu")
    plain, ck = run(**kw), run(**kw, g_checkpointing=True)
    names = ["bare detector fwd+bwd", "generator fwd+bwd alone (both groups)"] + [
        f"{v} ({label})" for v in VARIANTS for label in ("suite", "original loop")]  # every registered variant
    assert [r["what"] for r in plain] == names == [r["what"] for r in ck]
    for r in plain + ck:
        assert r["ms"] > 0 and r["peak_mib"] is not None and r["peak_mib"] >= 0
    assert plain[0]["ratio"] == 1.0 and plain[2]["overhead_ms"] == pytest.approx(
        plain[2]["ms"] - plain[0]["ms"] - plain[1]["ms"])
    args = argparse.Namespace(device="cpu", detector="demo", batch_size=2, image_size=64, steps=1, amp="none",
                              channels_last=False, g_checkpointing=True, compile_g=False)
    table = format_table(ck, args).splitlines()
    assert "g_checkpointing True" in table[0] and "peak MiB: peak RSS growth" in table[0]
    assert table[1].split()[-2:] == ["peak", "MiB"] and len(table) == 2 + len(names)
    assert table[3].startswith("generator fwd+bwd alone") and float(table[3].split()[-1]) == round(ck[1]["peak_mib"])


def test_bench_bad_settings_exit_2(capsys):
    assert main(["bench", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faap: error: bench needs --steps >= 1")  # no thread line: no network ran


def test_bench_variant_filter_and_progress(capsys):
    """--variants times only the named variants; each finished row prints one progress line."""
    seen = []
    rows = run(batch_size=2, image_size=64, steps=1, warmup=0, device="cpu", variants=["infonce"],
               progress=lambda done, total, row: seen.append((done, total, row["what"])))
    assert [r["what"] for r in rows] == ["bare detector fwd+bwd", "generator fwd+bwd alone (both groups)",
                                         "infonce (suite)", "infonce (original loop)"]
    assert seen == [(i + 1, 4, r["what"]) for i, r in enumerate(rows)]
    assert main(["bench", "--variants", "infonce,nosuch", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown variant(s) nosuch" in err[0] and "registered: " in err[0]


def test_gpu_script_command_lines_parse():
    """scripts/gpu_bench.sh's faap command lines (printed by DRY_RUN) are valid bench invocations."""
    import os
    import shlex
    import subprocess

    from faap.cli import build_parser

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run(["bash", os.path.join(root, "scripts", "gpu_bench.sh"), "OUTDIR"], env={**os.environ, "DRY_RUN": "1"},
                       capture_output=True, text=True, timeout=60, cwd=root)
    assert r.returncode == 0, r.stderr
    parsed = [build_parser().parse_args(shlex.split(line)) for line in r.stdout.splitlines()]
    assert [(a.amp, a.channels_last, a.compile_g, a.g_checkpointing) for a in parsed] == [
        ("none", False, False, False), ("bf16", False, False, False), ("none", True, False, False),
        ("none", False, True, False), ("bf16", True, True, False), ("none", False, False, True)]
    assert {(a.detector, a.device, a.image_size, a.batch_size) for a in parsed} == {
        ("OUTDIR/detr-r50-random.pth", "cuda", 800, 4)}
    assert len({a.out for a in parsed}) == 6


def test_random_detr_r50_has_the_real_architecture(tmp_path):
    import argparse

    from faap.detector import load_detector
    from faap.detector.official import random_original_state_dict

    sd = random_original_state_dict()
    assert len([k for k in sd if k.startswith("backbone.0.body.layer3.") and k.endswith("conv1.weight")]) == 6
    torch.save({"model": sd, "args": argparse.Namespace(dilation=False)}, tmp_path / "r50.pth")
    det = load_detector(str(tmp_path / "r50.pth"))
    c = det.model.config
    assert (c.encoder_layers, c.decoder_layers, c.num_queries, c.d_model, c.encoder_ffn_dim, c.num_labels) == (
        6, 6, 100, 256, 2048, 91)
    assert sum(p.numel() for p in det.model.parameters()) == 41_524_768  # DETR-R50 (BN affine as parameters)
