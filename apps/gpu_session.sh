#!/usr/bin/env bash
# What a session with a GPU runs on the device machine (the `device` tool's `run`, an H100):
# the CUDA-only tests, then apps/bench_gpu.py, then apps/bench_splat_gpu.py --max-time 120.
# Results and logs are copied into $OUT, which comes back to the session's machine.
#
#   bash apps/gpu_session.sh STAGE [ARGS]  STAGE: tests | bench | bench-train | bench-hash |
#                                               splat | tcnn-wheel | all
#
# ---------------------------------------------------------------------------------------------
# ONE-TIME PREPARATION, on the session's own machine (it reaches the package registries; the
# device machine reaches nothing, so every package it lacks travels as a wheel). From the repo
# root (/work/main):
#
#   mkdir -p .git/info && printf '/.whl/\n/.whl-viewer/\n/.scenes/\n/.tcnn/\n/.torch_ext/\n' \
#       >> .git/info/exclude
#
#   # 1. the scene: ../shared does not travel, so copy lego-400 into the repo without its depth
#   #    maps (51 MB of the 64 MiB that one call may carry; this script links it back to
#   #    ../shared/scenes on the device, where the benchmarks look for it)
#   mkdir -p .scenes && cp -r ../shared/scenes/lego-400 .scenes/ && \
#       find .scenes/lego-400 -name '*_depth_*' -delete
#
#   # 2. wheels (the device runs Python 3.12; its image already has torch 2.11+cu130, numpy,
#   #    pillow, imageio, safetensors, rich, matplotlib, jaxtyping, ninja, pytest; see
#   #    /work/.library/device/KINDS.md). nerfacc and gsplat are pure-Python wheels that compile
#   #    their CUDA kernels on first use (nvcc and ninja are on the device; 2-5 min for sm_90
#   #    with the settings below): no prebuilt wheel exists for torch 2.11 / CUDA 13.
#   D=".venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#      --platform manylinux1_x86_64"
#   $D -d .whl nerfacc==0.5.3 gsplat==1.5.3 pytorch-msssim==1.0.0 \
#       tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.0
#   #    The project itself travels as the working tree (PYTHONPATH=$PWD below); to carry it as
#   #    a wheel instead: .venv/bin/pip wheel --no-deps -w .whl .
#   #    viser (viewer tests only, not run here; with .scenes the call would pass 64 MiB, so a
#   #    separate folder, carried without .scenes):
#   $D -d .whl-viewer viser==1.1.1 msgspec websockets zstandard trimesh
#   #    Check each wheel's needs with: unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist
#
#   # 3. optional, tiny-cuda-nn (not on PyPI): a source tree with its submodules, pruned
#   #    (cutlass: only include/ and tools/util/include/), carried as .tcnn; the stage
#   #    tcnn-wheel builds a wheel on the device (5-10 min, its own call) and puts it in $OUT;
#   #    copy it into .whl for later calls. Without it the tcnn rows and tests skip with a reason.
#   git clone --recursive --depth 1 https://github.com/NVlabs/tiny-cuda-nn .tcnn
#   find .tcnn -name .git -prune -exec rm -rf {} + ; (cd .tcnn/dependencies/cutlass && \
#       find . -mindepth 1 -maxdepth 1 ! -name include ! -name tools -exec rm -rf {} +)
#   du -sh .tcnn    # it travels with .whl and the repo: all of it under 64 MiB, no .scenes
#
# CALLS (each at most 10 min; 30 min of device time per session, machine starts included). The
# JIT builds land in .torch_ext, which survives between calls only while the machine stays warm
# (30 s after a call), so issue the calls back to back:
#
#   run(command="bash apps/gpu_session.sh tests", carry=[".whl"], timeout_s=600)
#   run(command="bash apps/gpu_session.sh bench-train", carry=[".whl", ".scenes"], timeout_s=600)
#   run(command="bash apps/gpu_session.sh bench-hash", carry=[".whl"], timeout_s=600)
#   run(command="bash apps/gpu_session.sh splat", carry=[".whl", ".scenes"], timeout_s=600)
#
# `bench` runs both bench_gpu.py parts in one call (estimated 10 min: use it only if the parts
# ran well inside their limits). If bench-train nears its limit, split it by model:
# `bench-train --models hashgrid`, then `bench-train --models triplane` (the second call merges
# its model into the first one's results). Arguments after the stage go to bench_gpu.py.
# Optional: run(command="bash apps/gpu_session.sh tcnn-wheel", carry=[".tcnn"]) once, first.
# After each bench call, copy $OUT/gpu_*/bench.{md,json} into
# apps/results/gpu_*/ here: a later call carries them back (they are not ignored) and
# bench_gpu.py merges the next part into them. Commit the results with their commands.
# ---------------------------------------------------------------------------------------------
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/runs/gpu_session_out}
mkdir -p "$OUT"
LIMIT=${STAGE_LIMIT:-560}   # seconds for a stage's main command, so that copying still happens
PY=${PYTHON:-python3}   # the device's python3 holds torch (PYTHON=.venv/bin/python here)

setup() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site:$ROOT
    else
        export PYTHONPATH=$ROOT
    fi
    export PYTHONUNBUFFERED=1 FIELDKIT_QUIET=1
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
    export TORCH_EXTENSIONS_DIR=$ROOT/.torch_ext
    mkdir -p "$TORCH_EXTENSIONS_DIR"
    if [ ! -d ../shared/scenes/lego-400 ] && [ -d .scenes/lego-400 ]; then
        mkdir -p ../shared && ln -sfn "$ROOT/.scenes" ../shared/scenes
    fi
    {
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
        $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
              torch.cuda.is_available() and torch.cuda.get_device_name())"
        ls ../shared/scenes 2>&1
    } >"$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
}

copy_bench() {   # apps/results/gpu_<slug>/bench.{md,json} -> $OUT/gpu_<slug>/
    for d in apps/results/gpu_*/; do
        [ -f "$d/bench.json" ] || continue
        mkdir -p "$OUT/$(basename "$d")"
        cp "$d/bench.md" "$d/bench.json" "$OUT/$(basename "$d")/"
    done
}

stage_tests() {
    local files=()
    for f in tests/render/test_splat_gsplat.py tests/render/test_volume_nerfacc.py \
             tests/encoders/test_hashgrid_tcnn.py tests/fields/test_precision.py; do
        if [ -f "$f" ]; then files+=("$f"); else echo "missing (not run): $f"; fi
    done
    timeout -k 10 "$LIMIT" $PY -m pytest -v -rs -p no:cacheprovider "${files[@]}" 2>&1 |
        tee "$OUT/pytest_cuda.log"
    echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest_cuda.log"
    timeout -k 10 60 $PY -m fieldkit.cli doctor >"$OUT/doctor.txt" 2>&1
}

stage_bench() {   # $@: extra arguments of bench_gpu.py (e.g. --parts train)
    timeout -k 10 "$LIMIT" $PY apps/bench_gpu.py "$@" 2>&1 | tee "$OUT/bench_gpu.log"
    echo "bench_gpu exit: ${PIPESTATUS[0]}" | tee -a "$OUT/bench_gpu.log"
    copy_bench
}

stage_splat() {
    timeout -k 10 "$LIMIT" $PY apps/bench_splat_gpu.py --max-time 120 \
        --out apps/results/splat_lego_gpu.md 2>&1 | tee "$OUT/bench_splat_gpu.log"
    echo "bench_splat_gpu exit: ${PIPESTATUS[0]}" | tee -a "$OUT/bench_splat_gpu.log"
    [ -f apps/results/splat_lego_gpu.md ] && cp apps/results/splat_lego_gpu.md "$OUT/"
}

stage_tcnn_wheel() {
    [ -d .tcnn/bindings/torch ] || { echo "no .tcnn source tree carried"; return 1; }
    TCNN_CUDA_ARCHITECTURES=90 timeout -k 10 "$LIMIT" $PY -m pip wheel --no-deps \
        --no-build-isolation -w "$OUT" ./.tcnn/bindings/torch 2>&1 | tail -40 |
        tee "$OUT/tcnn_build.log"
}

setup
case "${1:-all}" in
    tests) stage_tests ;;
    bench) stage_bench "${@:2}" ;;
    bench-train) stage_bench --parts train "${@:2}" ;;
    bench-hash) stage_bench --parts hash "${@:2}" ;;
    splat) stage_splat ;;
    tcnn-wheel) stage_tcnn_wheel ;;
    all) stage_tests; stage_bench; stage_splat ;;
    *) echo "unknown stage ${1}; use tests, bench, bench-train, bench-hash, splat, tcnn-wheel, all"
       exit 2 ;;
esac
