#!/usr/bin/env bash
# The GPU check, as one script for the lent GPU machine (Python 3.12, torch 2.11, no package
# registry), in well under 10 minutes:
#   1. builds the extension in place (CUDA, sm_90 only unless TORCH_CUDA_ARCH_LIST is set);
#   2. python -m pytest -m cuda            (every CUDA test, CPU-vs-CUDA included);
#   3. compute-sanitizer memcheck and racecheck on a small subset of the CUDA tests;
#   4. every bench (CPU and GPU), JSON into benches/results/gpu-<name>.json.
# Each step's log goes to $OUT (the device tool's output folder) or ./gpu_check_logs; the
# script goes on after a failed step and exits non-zero if any failed.
#
# It installs nothing from a registry. Wheels of what the machine lacks (piq and torchvision
# for the metric peers, kornia for the morphology peer, ninja) are taken from ./wheels when
# that folder exists; make it here with:  benches/gpu_check.sh --prepare-wheels
# and carry it (device tool: carry=["wheels"]). Without them those peers' tests and benches skip.
#
# Here (no GPU) the script still builds, runs steps 2 and 4 on what the machine has (the CUDA
# tests skip), and says that step 3 needs a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare-wheels" ]; then
  # cp312 wheels for the GPU machine's torch 2.11 (torchvision 0.26.0 is its match).
  rm -rf wheels && mkdir wheels
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      -d wheels piq==0.8.0 torchvision==0.26.0 kornia kornia_rs ninja tifffile pyyaml tqdm nvidia-ml-py hypothesis \
      matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six \
      sortedcontainers scikit-learn joblib threadpoolctl
  du -sh wheels
  exit 0
fi

logs=${OUT:-$PWD/gpu_check_logs}
mkdir -p "$logs" benches/results
failed=()
step() {  # step NAME COMMAND...: runs it, logs to $logs/NAME.log, records a failure
  local name=$1
  shift
  local start=$SECONDS
  echo "gpu_check: $name ..."
  if "$@" > "$logs/$name.log" 2>&1; then
    echo "gpu_check: $name passed in $((SECONDS - start)) s"
  else
    echo "gpu_check: $name FAILED (rc $?) in $((SECONDS - start)) s; last lines:"
    tail -n 25 "$logs/$name.log"
    failed+=("$name")
  fi
}

if [ -d wheels ]; then
  step wheels python -m pip install --no-index --no-deps --find-links wheels wheels/*.whl
fi

has_gpu=$(python -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$has_gpu" = 1 ]; then
  gpu_name=$(python -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
  # The machine's GPU only: one architecture compiles in a third of the time of three.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(python -c \
    "import torch; print('.'.join(map(str, torch.cuda.get_device_capability())))")}
else
  gpu_name=none
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
step build python setup.py -q build_ext --inplace
python -c "import medgan_fast, json; print(json.dumps(medgan_fast.build_info()))" | tee "$logs/build_info.json"

step pytest_cuda python -m pytest -q -p no:cacheprovider -m cuda -x --durations=20

sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ "$has_gpu" = 1 ] && [ -n "$sanitizer" ]; then
  # One small case per kernel family; the sanitizer slows kernels 10-100x.
  subset=(tests/ops/test_components.py::test_cpu_equals_cuda tests/ops/test_morphology.py::test_cpu_equals_cuda
          "tests/ops/test_spectral_norm.py::test_cpu_equals_cuda" "tests/ops/test_metrics_ops.py::test_cpu_equals_cuda")
  for tool in memcheck racecheck; do
    step "sanitizer_$tool" "$sanitizer" --tool "$tool" --error-exitcode 99 --target-processes all \
        python -m pytest -q -p no:cacheprovider -m cuda -x -k "not float64" "${subset[@]}"
  done
else
  echo "gpu_check: compute-sanitizer step needs a GPU and compute-sanitizer (gpu=$has_gpu, sanitizer=${sanitizer:-none}); skipped"
fi

json=benches/results/gpu-$gpu_name.json
step benches python -m pytest -q -p no:cacheprovider benches --benchmark-enable --benchmark-json="$json"
[ -f "$json" ] && cp "$json" "$logs/"

if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed steps: ${failed[*]} (logs in $logs)"
  exit 1
fi
echo "gpu_check: all steps passed (logs in $logs, benches in $json)"
