#!/usr/bin/env bash
# The real-size benchmark on one GPU (issue 10), the one script a GPU session runs from the repo root:
# `faap bench` on the DETR-R50 architecture (random weights, scripts/random_detr_r50.py) at 800 px,
# in fp32, bf16 autocast, channels_last G, torch.compile'd G and checkpointed G. Each table is
# written to OUT/NAME.txt and all of them to OUT/all.txt.
#
#   bash scripts/gpu_bench.sh [OUT]      (default OUT: runs/gpu_bench; PYTHON, BATCH, STEPS, WARMUP override)
#   DRY_RUN=1 bash scripts/gpu_bench.sh  (print the faap command lines only; the tests parse them)
set -euo pipefail
OUT=${1:-runs/gpu_bench}
PY=${PYTHON:-python}
DET="$OUT/detr-r50-random.pth"
COMMON=(bench --detector "$DET" --device cuda --image-size 800 --batch-size "${BATCH:-4}"
        --steps "${STEPS:-10}" --warmup "${WARMUP:-3}")

bench() {  # NAME [extra faap bench flags...]
    local name=$1; shift
    if [ -n "${DRY_RUN:-}" ]; then
        printf '%q ' "${COMMON[@]}" "$@" --out "$OUT/$name.txt"; echo
    else
        "$PY" -m faap.cli "${COMMON[@]}" "$@" --out "$OUT/$name.txt"
    fi
}

if [ -z "${DRY_RUN:-}" ]; then
    mkdir -p "$OUT"
    [ -f "$DET" ] || "$PY" scripts/random_detr_r50.py "$DET"
fi
bench fp32
bench bf16 --amp bf16
bench channels_last --channels-last
bench compile_g --compile-g
bench bf16_channels_last_compile_g --amp bf16 --channels-last --compile-g
bench g_checkpointing --g-checkpointing
if [ -z "${DRY_RUN:-}" ]; then
    for f in fp32 bf16 channels_last compile_g bf16_channels_last_compile_g g_checkpointing; do
        cat "$OUT/$f.txt"; echo
    done > "$OUT/all.txt"
    echo "tables written to $OUT/all.txt"
fi
