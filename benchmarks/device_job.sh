#!/usr/bin/env bash
# Everything a session with a GPU runs, in one call of at most TOTAL_S seconds (300: with
# the machine's start a first call takes about 7 minutes, and a second one at a shorter
# setting still fits a 15-minute device budget), in the order of what each phase tells:
#   1. the GPU tests (device, sources, plans, gemm, absent, vs_cudnn report logic, backward);
#   2. benchmarks/vs_cudnn.py on ResNet-50 at batch 32 in fp32, fp16 and tf32, forward then
#      backward data and weights, as far as its budget goes;
#   3. compute-sanitizer memcheck on a few small cases of the four kernels, where installed;
#   4. sweeps of ResNet-50 at batch 32 in fp32, fp16 and tf32 with whatever time is left.
# Each phase has a time box (seconds, overridable) so that the whole job ends inside the
# device call; a phase that runs out keeps what it wrote. A confirming second call:
#   TOTAL_S=180 TESTS_S=45 VS_CUDNN_S=90 SANITIZER_S=20 bash benchmarks/device_job.sh The job works in $WORK (a new
# temporary folder by default), one log per phase and the environment, and leaves in $OUT
# (default results/gpu/device-job) few files, as a device call brings back only a few:
# device-job.tar.gz with everything, and beside it job.log, gpu-tests.log and vs_cudnn.md.
#
#   OUT=/somewhere bash benchmarks/device_job.sh
#
# Wheels in .whl/ (`make gpu-wheels` fetches the cuDNN frontend's; git ignores the folder, a
# device call carries it) are unpacked into a temporary folder (not packed) and put on
# PYTHONPATH before the caller's own entries, so a machine without internet gets what its
# image lacks.
#
# A device run cannot pass by skipping. The job exports CONVBENCH_REQUIRE_GPU=1, with which a
# missing or broken CuPy, driver, device or cuDNN fails the GPU tests (with one message saying
# what is missing) instead of skipping them, and its first check, right after the environment
# is recorded, is that same one: without a usable GPU it stops there, exit status 3. It exits
# 1 when the GPU tests fail, time out (TESTS_S), or pass none (all skipped, none collected);
# the later phases still run then, as their logs say more about the failure. Exit status 0:
# the GPU tests passed.
set -u
cd "$(dirname "$0")/.."
PY=${GPU_PYTHON:-python3}
FINAL=${OUT:-results/gpu/device-job}
OUT=${WORK:-$(mktemp -d -t convbench-device-job.XXXXXX)}
TOTAL_S=${TOTAL_S:-300}
TESTS_S=${TESTS_S:-70}
VS_CUDNN_S=${VS_CUDNN_S:-130}
SANITIZER_S=${SANITIZER_S:-30}
mkdir -p "$OUT" "$FINAL"
SITE=
for wheel in .whl/*.whl; do
  [ -f "$wheel" ] || continue
  SITE=${SITE:-$(mktemp -d -t convbench-site.XXXXXX)}
  "$PY" -m zipfile -e "$wheel" "$SITE"
done
export PYTHONPATH="$PWD${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
pack() {
  tar czf "$FINAL/device-job.tar.gz" -C "$OUT" .
  for f in job.log gpu-tests.log vs_cudnn.md; do [ -f "$OUT/$f" ] && cp "$OUT/$f" "$FINAL/"; done
}
trap pack EXIT
start=$(date +%s)
phase() { echo "== $1 ($(( $(date +%s) - start )) s into the job)" | tee -a "$OUT/job.log"; }
# What went wrong in the GPU tests ($1: pytest's exit status under timeout, $2: its log), or
# nothing. Exit status 0 with no test passed is a failure too: every test skipped.
tests_failure() {
  case "$1" in
    0) grep -E ' in [0-9.]+s( \(.*\))?( =+)?$' "$2" | tail -n 1 |
         grep -Eq '(^|[^0-9])[0-9]+ passed' ||
         echo "no GPU test passed (all skipped, or none collected)" ;;
    124|137) echo "the GPU tests timed out after ${TESTS_S} s" ;;
    *) echo "the GPU tests failed (pytest exit status $1)" ;;
  esac
}
fail() { echo "FAILED: $1" | tee -a "$OUT/job.log" >&2; }
export CONVBENCH_REQUIRE_GPU=1

phase environment
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv 2>&1
  nvcc --version 2>&1 | tail -2
  "$PY" -c "import sys, numpy, cupy; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__)" 2>&1
  "$PY" -c "import cudnn; print('cudnn frontend', cudnn.__version__, 'backend', cudnn.backend_version())" 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} > "$OUT/env.txt"

phase "GPU check"
# The GPU tests' own requirement (kernels/gpu/runtime.py), asked before minutes are spent.
missing=$("$PY" -c "
from convbench.kernels.gpu.runtime import gpu_test_blockers, require_gpu_message
blockers = gpu_test_blockers()
print(require_gpu_message(blockers) if blockers else '')
" 2>&1) || missing="the GPU check itself failed: $missing"
if [ -n "$missing" ]; then
  fail "$missing"
  exit 3
fi

phase "GPU tests (${TESTS_S} s)"
timeout "$TESTS_S" "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_device.py \
  tests/test_gpu_sources.py tests/test_gpu_plans.py tests/test_gpu_gemm.py \
  tests/test_gpu_absent.py tests/test_vs_cudnn.py tests/test_gpu_backward_device.py \
  tests/test_kernel_matrix.py \
  > "$OUT/gpu-tests.log" 2>&1
tests_rc=$?
tests_failed=$(tests_failure "$tests_rc" "$OUT/gpu-tests.log")
echo "rc=$tests_rc" >> "$OUT/gpu-tests.log"
[ -z "$tests_failed" ] || fail "$tests_failed"

phase "vs_cudnn, ResNet-50 batch 32, fp32 fp16 tf32 (${VS_CUDNN_S} s)"
timeout --signal=INT --kill-after=15 "$VS_CUDNN_S" "$PY" benchmarks/vs_cudnn.py \
  --batch 32 --math fp32,fp16,tf32 --direction fwd,bwd_d,bwd_w --match '^(conv1|res)' \
  --pairs 3 --accuracy-batch 32 \
  --budget $(( VS_CUDNN_S - 25 )) --out "$OUT/vs_cudnn" > "$OUT/vs_cudnn.log" 2>&1
echo "rc=$?" >> "$OUT/vs_cudnn.log"

phase "compute-sanitizer (${SANITIZER_S} s)"
if command -v compute-sanitizer > /dev/null; then
  timeout "$SANITIZER_S" compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" -c "
import numpy as np, cupy, convbench
from convbench import ConvProblem
for desc in ('mb2ic16ih13oc24kh3ph1', 'g2mb1ic8ih11oc12kh3sh2ph1', 'mb2ic12ih8oc40kh1sh2'):
    for dt in ('float32', 'float16'):
        p = ConvProblem.parse(desc).with_(dtype=dt)
        x = cupy.asarray(np.random.default_rng(0).uniform(-1, 1, p.input_shape).astype(dt))
        w = cupy.asarray(np.random.default_rng(1).uniform(-1, 1, p.weight_shape).astype(dt))
        for algo in convbench.algorithms('gpu'):
            if convbench.get_kernel(algo, 'gpu').supports(p) is not None:
                continue
            if convbench.get_kernel(algo, 'gpu').kind != 'kernel':
                continue
            convbench.conv2d(x, w, stride=(p.sh, p.sw), padding=(p.ph, p.pw), groups=p.g,
                             algo=algo, backend='gpu')
cupy.cuda.Device().synchronize()
print('sanitize cases done')
" > "$OUT/compute-sanitizer.log" 2>&1
  echo "rc=$?" >> "$OUT/compute-sanitizer.log"
else
  echo "compute-sanitizer not installed" > "$OUT/compute-sanitizer.log"
fi

left=$(( TOTAL_S - ($(date +%s) - start) - 10 ))
phase "ResNet-50 sweeps, batch 32 (${left} s left)"
if [ "$left" -ge 30 ]; then
  for math in fp32 fp16 tf32; do
    timeout --signal=INT --kill-after=5 $(( left / 3 )) "$PY" -m convbench run --backend gpu \
      --suite resnet50 --batch 32 --math "$math" --algo all --mode both --rounds 2 \
      --no-progress --out "$OUT/resnet50-mb32-$math.jsonl" \
      --table "$OUT/resnet50-mb32-$math.md" > "$OUT/sweep-$math.log" 2>&1
    echo "rc=$?" >> "$OUT/sweep-$math.log"
  done
fi
phase "done"
[ -z "$tests_failed" ] || exit 1
