#!/usr/bin/env bash
# The GPU check (issue 14), for a machine with an NVIDIA GPU, torch with
# CUDA and no package registry, run from the repository root:
#
#     bash tools/gpu-check.sh [BUNDLE]        (BUNDLE: gpu-bundle)
#
# BUNDLE is made on the build machine by tools/gpu-bundle.sh.  Everything
# goes to $OUT (default ./gpu-check-out): gpu-check.log (all of it) and a
# file per part.  The parts, each with its own time limit (about 5 minutes
# in all, usually 3 to 4):
#   1. test_gpu run: every spec's case as a GPU optimizer against the CPU's
#      reference interpreter, bit for bit (what ctest's gpu_run runs)
#   2. test_gpu api: streams, zero_grad, checkpoints GPU <-> CPU, schedules,
#      groups, refusals (ctest's gpu_api)
#   3. python/tests/test_torch_cuda.py: jopt.torch on CUDA tensors against
#      jopt on the CPU (bits) and torch's CUDA optimizers (ctest's
#      python_cuda)
#   4. bench/bench_gpu.py --quick: jopt against torch's for-loop, foreach,
#      fused and torch.compile, and the device's copy rate
#   5. bench_threads: jopt's CPU step at 1, 2, 4, 8, 16 threads against the
#      memory-only loop
# It never stops at a failure; the summary at the end says which parts
# failed or ran out of time.
set -uo pipefail
bundle=${1:-gpu-bundle}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
t0=$SECONDS
declare -a summary=()

part() { # NAME FILE LIMIT_SECONDS COMMAND...: runs it, its output also in $out/FILE
  local name=$1 file=$2 limit=$3 t=$SECONDS rc
  shift 3
  echo
  echo "==== $name (limit ${limit} s) -> $out/$file"
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$out/$file"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) summary+=("$name: ok ($((SECONDS - t)) s)") ;;
    77) summary+=("$name: skipped ($((SECONDS - t)) s)") ;;
    124|137) summary+=("$name: TIMED OUT after ${limit} s") ;;
    *) summary+=("$name: FAILED, exit $rc ($((SECONDS - t)) s)") ;;
  esac
  echo "==== $name: exit $rc, $((SECONDS - t)) s"
}

main() {
echo "==== machine"
date -u
uname -r
nproc
lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)|L3' || true
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | head -4 || true
command -v python3 ptxas nvcc 2>/dev/null || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
cat "$bundle/COMMIT" 2>/dev/null | sed 's/^/bundle built from /'

if [ ! -f "$bundle/unpack.sh" ]; then
  echo "no bundle at $bundle: make one with tools/gpu-bundle.sh (docs/notes/gpu-run.md)"
  return 2
fi
echo
echo "==== unpack $bundle into /tmp/jopt-libs"
bash "$bundle/unpack.sh" || { echo "unpack failed"; return 2; }
L=/tmp/jopt-libs
ls -la "$L"
# The C programs take every library of the bundle.  Python (torch) keeps the
# machine's own: its library path gets jopt, LLVM, Lua and only those of
# their libraries the machine lacks.
P=/tmp/jopt-pylibs
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
rm -rf "$P"
mkdir -p "$P"
for f in "$L"/*.so*; do
  name=$(basename "$f")
  case $name in
    libcuda*) ;; # the machine's driver, always
    libjopt.so|libLLVM*|liblua*) ln -sf "$f" "$P/$name" ;;
    *) "$ldconfig" -p 2>/dev/null | grep -q "^[[:space:]]*$name " || ln -sf "$f" "$P/$name" ;;
  esac
done
echo "python's library path: $(ls "$P" | tr '\n' ' ')"
export JOPT_SPEC_PATH=$PWD/specs

part "test_gpu run (GPU against the CPU, bit for bit; 4 processes)" test_gpu_run.txt 80 \
  env LD_LIBRARY_PATH="$L" bash -c 'rc=0 skip=0
    for k in 0 1 2 3; do "$0/test_gpu" run $k/4 > "$1/test_gpu_run_$k.txt" 2>&1 & done
    for k in 0 1 2 3; do
      wait -n; s=$?
      case $s in 0) ;; 77) skip=$((skip + 1)) ;; *) rc=1 ;; esac
    done
    cat "$1"/test_gpu_run_[0-3].txt
    [ $rc = 0 ] && [ $skip = 4 ] && rc=77
    exit $rc' "$L" "$out"
part "test_gpu api" test_gpu_api.txt 30 env LD_LIBRARY_PATH="$L" "$L/test_gpu" api
part "python test_torch_cuda (jopt.torch on CUDA)" test_torch_cuda.txt 45 \
  env LD_LIBRARY_PATH="$P" JOPT_LIBRARY="$P/libjopt.so" python3 python/tests/test_torch_cuda.py
part "bench_gpu (jopt against torch on the GPU)" bench_gpu.txt 100 \
  env LD_LIBRARY_PATH="$P" JOPT_LIBRARY="$P/libjopt.so" python3 bench/bench_gpu.py \
  --lib "$P/libjopt.so" --quick --deadline 80 --compile adam:64M --csv "$out/bench_gpu.csv"
part "bench_threads (CPU at 1, 2, 4, 8, 16 threads)" bench_threads.txt 50 \
  env LD_LIBRARY_PATH="$L" "$L/bench_threads" --threads 1,2,4,8,16 --budget 0.2

echo
echo "==== summary ($((SECONDS - t0)) s; files in $out)"
printf '%s\n' "${summary[@]}"
}

main 2>&1 | tee "$out/gpu-check.log"
