#!/usr/bin/env bash
# Run on a CUDA machine: vLLM vs transformers generation (attempt-2 inputs, metrics, tokens/s),
# then the training-step and eval-throughput benchmarks on the GPU. Results land in $OUT or ./gpu_results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_results}"
mkdir -p "$out"
python scripts/gpu_check.py --out "$out/gpu_check.json" "$@"
for run in "math" "toy" "math --no-cache-reuse"; do
    name=$(echo "$run" | sed 's/ --no-cache-reuse/_no_reuse/')
    python benchmarks/bench_train.py --setting $run --hidden 512 --layers 8 --max-new-tokens 128 \
        --prompts 16 --generations 8 --steps 5 --out "$out/bench_train_${name}_gpu.json"
done
python benchmarks/bench_eval.py --hidden 512 --layers 8 --problems 256 --batch-size 64 --max-new-tokens 128 \
    --out "$out/bench_eval_gpu.json"
