#!/usr/bin/env bash
# The GPU checks in one run: `pytest -m cuda`, the four benchmarks, figures into one folder.
#
#   bash scripts/gpu_check.sh OUT_DIR [part]      part: all (default) | a | b
#
# a: environment, pytest -m cuda, renderer (batch 1/8/16/32 x float32/float16/bfloat16), sampler, pipeline
#    (10 s and 60 s clips end to end, float16), latency, live (audio-to-frame latency per hop).
# b: [pytest -m cuda when run alone] renderer layout and fusion variants, the pipeline traced with and without
#    overlap and with paste-back, the renderer compiled.
#    Each step has its own time limit, so one slow step does not take the others down.
# Weights: random, official sizes (speed does not depend on the values); the CUDA tests use the fixture weights.
# Machines without the dlib landmark model: set CROP_FILE to a saved crop (npz: image, matrix, landmarks,
# face_box; see README "Speed"); without it the real crop runs.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [all|a|b]}
part=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
crop=()
[ -n "${CROP_FILE:-}" ] && crop=(--crop-file "$CROP_FILE")
figures="$out/figures.jsonl"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, say how it ended
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/summary.txt"
    tail -n 25 "$out/$name.log" >>"$out/summary.txt"
}

if [ "$part" = all ] || [ "$part" = a ]; then
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
        python -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
        command -v ffmpeg || echo "no system ffmpeg"
    } >"$out/environment.txt" 2>&1
    cat "$out/environment.txt" >>"$out/summary.txt"
    step pytest_cuda 240 env KDTALKER_CUDA_REPORT="$out/cuda_tests.jsonl" \
        python -m pytest -q -m cuda -p no:xdist -p no:cacheprovider tests/test_cuda.py -rs --durations=10
    step renderer 150 python scripts/benchmark.py renderer --device cuda --batch-sizes 1 8 16 32 \
        --dtypes float32 float16 bfloat16 --repeats 3 --json "$figures"
    step sampler 60 bash -c "python scripts/benchmark.py sampler --device cuda --repeats 3 && \
        python scripts/benchmark.py sampler --device cuda --repeats 3 --samples 8"
    step pipeline_float16 120 python scripts/benchmark.py pipeline --device cuda --dtype float16 --frames 0 \
        --seconds 10 60 "${crop[@]}" --json "$figures"
    step latency 60 python scripts/benchmark.py latency --device cuda --dtype float16 --frames 0 --warmup "${crop[@]}"
    step live 90 python scripts/benchmark.py live --device cuda --dtype float16 --hops 8 16 64 --rounds 2 "${crop[@]}"
fi
if [ "$part" = all ] || [ "$part" = b ]; then
    [ "$part" = b ] && step pytest_cuda 170 env KDTALKER_CUDA_REPORT="$out/cuda_tests.jsonl" \
        python -m pytest -q -m cuda -p no:xdist -p no:cacheprovider tests/test_cuda.py -rs --durations=10
    step renderer_variants 70 bash -c "for v in '' '--memory-format contiguous' '--no-fuse'; do \
        python scripts/benchmark.py renderer --device cuda --batch-sizes 16 --dtypes float32 float16 --repeats 3 \$v; done"
    step pipeline_trace 55 python scripts/benchmark.py pipeline --device cuda --dtype float16 --frames 0 \
        --seconds 10 --trace "${crop[@]}" --json "$figures"
    step pipeline_serial 55 python scripts/benchmark.py pipeline --device cuda --dtype float16 --frames 0 \
        --seconds 10 --trace --no-overlap "${crop[@]}" --json "$figures"
    step pipeline_no_graphs 55 python scripts/benchmark.py pipeline --device cuda --dtype float16 --frames 0 \
        --seconds 10 --no-graphs "${crop[@]}" --json "$figures"
    step pipeline_paste_back 55 python scripts/benchmark.py pipeline --device cuda --dtype float16 --frames 0 \
        --seconds 10 --paste-back "${crop[@]}" --json "$figures"
    step renderer_compile 90 python scripts/benchmark.py renderer --device cuda --batch-sizes 16 \
        --dtypes float16 --repeats 3 --compile --json "$figures"
fi
echo "figures: $figures; logs: $out/*.log; summary: $out/summary.txt"
