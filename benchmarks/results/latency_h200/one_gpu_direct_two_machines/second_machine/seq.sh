#!/bin/bash
# Machine 2 of 2026-12-04: ours alone (delivery direct), at the load points of machine 1's vllm serve run.
out=$1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
rp() { python3 benchmarks/request_path_h200.py "$@" --out "$out"; }
step() { echo "$(date +%T) $*" >> "$out/progress"; }
step begin
bash benchmarks/gpu_compile_cache.sh restore .gpu/compile_cache > "$out/compile_cache_restore.log" 2>&1; step "compile cache restore rc=$?"
cp .gpu/seed/latency.json .gpu/seed/bursty.json "$out/"
rp start --only ours --front haproxy-direct; step "ours (haproxy-direct) start rc=$?"
rp measure --part latency --only ours; step "ours latency rc=$?"
rp measure --part bursty --only ours --point-s 20; step "ours bursty+flood rc=$?"
rp stop --only ours
step done
