#!/bin/sh
# bench_shard.sh [BUILD_DIR] [STEPS]: bench_shard on ResNet-50's and GPT-2's
# tensors with Adam, on 1, 2 and 4 processes, sharded and replicated, one
# mpirun per configuration (bench/RESULTS.md, "Sharded optimizer").
set -eu
build=${1:-build-bench}
steps=${2:-5}
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_pml_monitoring_enable=1 # bytes sent, as Open MPI counts them
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
echo "model    mode        N  step (median)  sent/step: MPI, jopt   state/process  buffers   peak RSS  balance"
for model in resnet50 gpt2; do
    for n in 1 2 4; do
        for mode in replicated sharded; do
            nice mpiexec -n "$n" "$build/bench_shard" --model "$model" --mode "$mode" \
                --steps "$steps"
        done
    done
done
