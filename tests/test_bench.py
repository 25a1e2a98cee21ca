"""faap bench: peak memory per row, activation checkpointing and its table."""

import argparse

import pytest
import torch

from faap.bench import PeakMemory, format_table, run
from faap.cli import main


def test_peak_memory_measures_what_the_block_allocates():
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
    names = ["bare detector fwd+bwd", "generator fwd+bwd alone (both groups)", "adversarial (suite)",
             "adversarial (original loop)", "infonce (suite)", "infonce (original loop)"]
    assert [r["what"] for r in plain] == names == [r["what"] for r in ck]
    for r in plain + ck:
        assert r["ms"] > 0 and r["peak_mib"] is not None and r["peak_mib"] >= 0
    assert plain[0]["ratio"] == 1.0 and plain[2]["overhead_ms"] == pytest.approx(
        plain[2]["ms"] - plain[0]["ms"] - plain[1]["ms"])
    args = argparse.Namespace(device="cpu", detector="demo", batch_size=2, image_size=64, steps=1, amp="none",
                              channels_last=False, g_checkpointing=True, compile_g=False)
    table = format_table(ck, args).splitlines()
    assert "g_checkpointing True" in table[0] and "peak MiB: peak RSS growth" in table[0]
    assert table[1].split()[-2:] == ["peak", "MiB"] and len(table) == 8
    assert table[3].startswith("generator fwd+bwd alone") and float(table[3].split()[-1]) == round(ck[1]["peak_mib"])


def test_bench_bad_settings_exit_2(capsys):
    assert main(["bench", "--batch-size", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("faap: error: bench needs --steps >= 1") and len(err) == 2  # threads line, error line
