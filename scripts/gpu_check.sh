#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU, install what yolobench's GPU runtimes need (from PyPI, or from a
# folder of wheels for an offline machine) and run scripts/gpu_check.py on a folder of prebuilt ONNX files
# (made on any machine by scripts/make_gpu_check_models.py). Needs python3 with numpy; torch, Ultralytics and
# pydantic are not used. Everything goes to stdout; a piece that is missing is one line, the rest still runs.
#
#   bash scripts/gpu_check.sh MODELS_DIR [WHEELS_DIR] [-- extra gpu_check.py options, e.g. --runs 50]
#
# WHEELS_DIR holds *.whl files installed with --no-deps, e.g. onnxruntime-gpu, tensorrt-cu13,
# tensorrt-cu13-libs, tensorrt-cu13-bindings, cuda-python/cuda-bindings (whichever are missing there).
# Environment: PYTHON (default python3), GPU_CHECK_SITE (install target, default /tmp/yolobench-gpu-site),
# GPU_CHECK_TIMEOUT (seconds for the whole check, default 540), GPU_CHECK_NO_INSTALL=1 (install nothing: an
# offline machine without a wheel folder, where asking PyPI would only wait for timeouts).
set -u
exec 2>&1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [ $# -lt 1 ]; then
    echo "usage: bash scripts/gpu_check.sh MODELS_DIR [WHEELS_DIR] [-- gpu_check.py options]"
    exit 2
fi
models="$1"; shift
wheels=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then wheels="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
python="${PYTHON:-python3}"
site="${GPU_CHECK_SITE:-/tmp/yolobench-gpu-site}"
started=$(date +%s)

echo "== gpu_check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname); python: $(command -v "$python") ($("$python" -V 2>&1))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/GPU (nvidia-smi): /'
    cuda_major="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)"
else
    echo "GPU (nvidia-smi): nvidia-smi not found"
    cuda_major=""
fi
echo "driver supports CUDA: ${cuda_major:-unknown}"
"$python" -c "import numpy" 2>/dev/null || { echo "FATAL: $python has no numpy; the check needs python3 with numpy"; exit 1; }

have() { "$python" -c "$1" >/dev/null 2>&1; }
mkdir -p "$site"
if [ "${GPU_CHECK_NO_INSTALL:-0}" = "1" ]; then
    echo "GPU_CHECK_NO_INSTALL=1: installing nothing; using what $python has"
elif [ -n "$wheels" ]; then
    if ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "installing from $wheels (no index, no deps) into $site: $(cd "$wheels" && ls *.whl | tr '\n' ' ')"
        # One pip call, so wheels sharing a top-level folder (nvidia/, cuda/) are merged, not replaced.
        if ! "$python" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
                --target "$site" "$wheels"/*.whl; then
            echo "WARNING: installing the wheels together failed; trying one at a time"
            for wheel in "$wheels"/*.whl; do
                "$python" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
                    --target "$site.one" "$wheel" && cp -r "$site.one"/. "$site"/ \
                    || echo "WARNING: $(basename "$wheel") did not install"
                rm -rf "$site.one"
            done
        fi
    else
        echo "WARNING: no *.whl in $wheels; going on with what is installed"
    fi
else
    need=()
    have "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" \
        || need+=(onnxruntime-gpu)
    if ! have "import tensorrt" && ! have "import tensorrt_bindings"; then
        trt="tensorrt-cu${cuda_major:-12}"
        [ "${cuda_major:-0}" -ge 13 ] 2>/dev/null || trt="tensorrt-cu12"
        need+=("$trt" "$trt-libs" "$trt-bindings")
    fi
    have "from cuda.bindings import runtime" || have "from cuda import cudart" || need+=(cuda-python cuda-bindings cuda-pathfinder)
    if [ "${cuda_major:-0}" -lt 13 ] 2>/dev/null && [[ " ${need[*]-} " == *" onnxruntime-gpu "* ]]; then
        echo "NOTE: the driver supports CUDA ${cuda_major:-?}; recent onnxruntime-gpu wheels on PyPI need CUDA 13:" \
             "pass a WHEELS_DIR with a CUDA ${cuda_major:-12} build if its CUDA EP fails to load"
    fi
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing from PyPI into $site (no deps; what is missing): ${need[*]}"
        timeout 300 "$python" -m pip install -q --no-deps --no-compile --disable-pip-version-check \
            --default-timeout 10 --retries 0 --target "$site" "${need[@]}" \
            || echo "WARNING: pip install ${need[*]} failed (offline? pass a WHEELS_DIR); going on without"
    fi
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
# TensorRT's pip libraries are found by `import tensorrt`; ORT's TensorRT EP loads them by name, so list them too.
for libs in "$site"/tensorrt_libs "$site"/nvidia/*/lib; do
    [ -d "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
echo "setup took $(( $(date +%s) - started )) s"

timeout "${GPU_CHECK_TIMEOUT:-540}" "$python" -u "$here/gpu_check.py" "$models" "$@"
status=$?
[ $status -eq 124 ] && echo "gpu_check.py hit the GPU_CHECK_TIMEOUT (${GPU_CHECK_TIMEOUT:-540} s); rows above are what finished"
echo "== gpu_check.sh done in $(( $(date +%s) - started )) s (exit $status)"
exit $status
