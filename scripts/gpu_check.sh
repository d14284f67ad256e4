#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and nothing else prepared:
#   bash scripts/gpu_check.sh            (from the repository root)
# Installs what is missing (array-api-compat and the test tools, from ./.whl when that
# folder holds wheels, as on a machine without a network; CuPy for the CUDA that
# nvidia-smi reports), then runs the test suite on CuPy, on torch's CUDA device and on
# JAX (whose default device is the GPU when jax has CUDA), and the GPU benchmark rows
# (`wide` at 1024 and 4096 in FP32, TF32 as its own row; K steps, one sync per sample).
# It ends with the benchmark table. Budget: under 8 minutes on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none)" >&2
    exit 2
fi
cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
nvidia-smi -L

pip_install() {  # from ./.whl when it holds wheels (no network), else from the index
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --find-links .whl "$@"
    else
        "$PY" -m pip install -q "$@"
    fi
}
missing=()
for spec in array_api_compat:array-api-compat array_api_strict:array-api-strict \
            pytest:pytest hypothesis:hypothesis pytest_benchmark:pytest-benchmark \
            tqdm:tqdm threadpoolctl:threadpoolctl; do
    "$PY" -c "import ${spec%%:*}" 2>/dev/null || missing+=("${spec#*:}")
done
"$PY" -c "import cupy" 2>/dev/null || missing+=("cupy-cuda${cuda_major:-12}x")
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    pip_install "${missing[@]}" || { echo "gpu_check: could not install ${missing[*]}" >&2; exit 2; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

status=0
run_tests() {  # name, env assignments...
    local name=$1; shift
    echo "== tests on $name"
    env "$@" timeout 150 "$PY" -m pytest tests -q -x -p no:cacheprovider \
        | tee "$OUT_DIR/tests-$name.log" | tail -3
    local rc=${PIPESTATUS[0]}
    ((rc == 0)) || { echo "tests on $name: exit $rc"; status=1; }
}
run_tests cupy PORTABLE_MLP_BACKEND=cupy
run_tests torch-cuda PORTABLE_MLP_BACKEND=torch PORTABLE_MLP_TORCH_DEVICE=cuda
if "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
    run_tests jax-gpu PORTABLE_MLP_BACKEND=jax
else
    echo "== tests on jax-gpu: skipped, JAX has no GPU backend here"
fi

echo "== benchmarks (GPU rows)"
timeout 240 "$PY" -m benchmarks.report --backends cupy,torch-cuda,torch-cuda-tf32,jax-jit \
    --configs wide,wide4096 --rounds 5 | tee "$OUT_DIR/gpu-report.txt"
((PIPESTATUS[0] == 0)) || status=1
exit $status
