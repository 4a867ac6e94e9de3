#!/usr/bin/env bash
# jopt.torch inside training loops on a many-core machine without a package
# registry (the 16-core device machine: torch there, no LLVM), run from the
# repository root:
#     bash bench/device_dropin.sh [BUNDLE]     (BUNDLE: dropin-bundle by default)
# BUNDLE is a folder made here by
#     bash /work/shared/tools/carry-bundle.sh dropin-bundle build/libjopt.so
# It prints, within about 9 minutes (each part has its own limit):
#   1. the machine, torch's version and parallel backend
#   2. profile_dropin.py: Adam on the 4.2M MLP at 1 thread and every core,
#      fused=True against jopt on torch's OpenMP team and on its own pool,
#      the step's parts (the issue's in-process contention case)
#   3. bench_dropin.py: MLP and transformer, Adam and SGD, 1, 2 and every
#      thread: foreach, fused, jopt, jopt-own (no compile,
#      no DeepSpeed: minutes each)
#   4. ResNet-50's 161 tensors, SGD momentum, 1 thread
# Outputs are also copied to $OUT when that is set.
set -uo pipefail
bundle=${1:-dropin-bundle}
t0=$SECONDS
declare -a summary=()
part() { # NAME LIMIT COMMAND...
  local name=$1 limit=$2 t=$SECONDS rc
  shift 2
  echo; echo "==== $name (limit ${limit} s)"
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  summary+=("$name: exit $rc, $((SECONDS - t)) s")
  echo "==== $name: exit $rc, $((SECONDS - t)) s"
}
echo "==== machine"; date -u; nproc; lscpu | grep -E "Model name|^CPU\(s\)|L3" || true
if [ -d "$bundle" ]; then
  eval "$(bash "$bundle/unpack.sh")"
  export JOPT_LIBRARY=/tmp/jopt-libs/libjopt.so
else
  export JOPT_LIBRARY=${JOPT_LIBRARY:-$PWD/build/libjopt.so}
fi
export JOPT_SPEC_PATH=${JOPT_SPEC_PATH:-$PWD/specs}
python3 -c "import torch; print('torch', torch.__version__); print(torch.__config__.parallel_info())" | head -4
out=${OUT:-/tmp/dropin-out}; mkdir -p "$out"
part profile 200 python3 bench/profile_dropin.py --part loop --models mlp4m --threads 1,all \
    --impls fused,jopt-own,jopt --rounds 1 --iters 20 --tries 1 --out "$out/profile_dropin.txt"
part bench 270 python3 bench/bench_dropin.py --models mlp4m,transformer --optims adam,sgd \
    --threads 1,2,all --impls foreach,fused,jopt,jopt-own --iters 20 --rounds 1 --tries 1 \
    --out "$out/bench_dropin.txt"
part resnet 60 python3 bench/profile_dropin.py --part resnet --impls fused,jopt --rounds 1 \
    --iters 15 --tries 1 --out "$out/profile_resnet.txt"
echo; echo "==== summary ($((SECONDS - t0)) s)"; printf '%s\n' "${summary[@]}"
