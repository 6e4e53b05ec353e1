#!/bin/bash
# Issue 16's parts on one H200, `vllm serve` first (its saturated run sets the load points), then ours under
# HAProxy mode with delivery by pull; started by `gpu_detached.sh start /tmp/rp benchmarks/request_path_one_gpu.sh`.
# Ours' bursty part and flood come before its latency part, which a short device budget may then leave out.
out=$1
progress="$out/progress"  # gpu_detached.sh's wait reads it; `out` moves to a sub-run below
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
rp() { python3 benchmarks/request_path_h200.py "$@" --out "$out"; }
step() { echo "$(date +%T) $*" >> "$progress"; }
gpu_free() {  # a stopped server's engine process can hold the GPU's memory a few seconds longer
  for _ in $(seq 60); do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    [ "$used" -lt 2000 ] && return
    sleep 2
  done
  step "GPU memory still ${used} MiB in use"
}
step begin
rp start --only vllm; step "vllm start rc=$?"
rp measure --part latency --only vllm; step "vllm latency rc=$?"
rp measure --part bursty --only vllm --point-s 20; step "vllm bursty+flood rc=$?"
gpu_free
rp start --only ours --front haproxy; step "ours start rc=$?"
rp measure --part bursty --only ours --point-s 20; step "ours bursty+flood rc=$?"
gpu_free
rp start --only ours --front haproxy; step "ours restart rc=$?"
rp measure --part latency --only ours; step "ours latency rc=$?"
rp stop --only ours
rp summarize > "$out/goals.txt" 2>&1; step "summarize rc=$?"
# Then, as far as the device time goes: ours' flood again with router.lower_class_prefill_tokens (2,048: eight
# of the flood's 256-token prompts prefilling at once), at the same low rate, beside the same vllm serve run.
mkdir -p "$out/prefill_budget" && cp "$out"/{latency,bursty,servers}.json "$out/prefill_budget"/
out="$out/prefill_budget"
gpu_free
rp start --only ours --front haproxy --lower-class-prefill-tokens 2048; step "ours start (prefill budget) rc=$?"
rp measure --part flood --only ours; step "ours flood (prefill budget) rc=$?"
rp summarize > "$out/goals.txt" 2>&1
step done
