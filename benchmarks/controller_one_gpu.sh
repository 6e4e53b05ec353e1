#!/bin/bash
# Issue 19's parts not yet measured on a GPU, on one H200 in one go; started by
# `gpu_detached.sh start /tmp/c19 benchmarks/controller_one_gpu.sh` (set STAGE first: `STAGE=long-form bash
# benchmarks/gpu_detached.sh start ...`, the detached sequence inherits it).
#   STAGE=chunked (default)  the chunked-prefill frontier on vllm-512 / 2048 / 8192 (8192 is the long-form plan's
#                            budget, so the controller's pick is on the frontier), then n-gram speculative
#                            decoding against none (speculative_h200.py)
#   STAGE=long-form          the long-form preset: vllm-8192 (closed-loop capacity, the rate search, the grid),
#                            then our app planned for long-form. Outputs average 2,048 tokens (p95 4,096), so each
#                            open-loop run is ~2 min (45 s of arrivals, then ~40 s a request at ~20 ms TPOT) and
#                            the closed-loop capacity run ~1,024 x 2,048 tokens at ~15k tok/s: a smaller sweep than
#                            the other presets' (LONG_FORM_SWEEP: 1,024 capacity requests, 2 rate probes,
#                            max_num_seqs 64 / 256 / 1,024 beside the plans' 136 / 384 / 1,024), estimated ~21 min
#                            with the starts. A later start resumes (measure skips what DIR already holds: start it
#                            again on the same DIR after copying it back).
# Measured 2026-12-03 (run 11): STAGE=chunked took 17.8 min from begin to done (engine starts 27 s - 1.6 min
# with the compile cache warm, each budget's run ~1 min, speculative 7.8 min with two starts of our app).
out=$1
stage=${STAGE:-chunked}
progress="$out/progress"  # gpu_detached.sh's wait reads it
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
ctl() { python3 benchmarks/controller_h200.py "$@" --out "$out/controller" --ready-timeout-s 600 --time-budget-s 3000; }
LONG_FORM_SWEEP=(--capacity-requests 1024 --rate-probes 2 --grid 64,256,1024)
step() { echo "$(date +%T) $*" >> "$progress"; }
step "begin $stage"
# An earlier session's compile caches, where carried (.gpu/compile_cache/, gpu_compile_cache.sh): a warm first start.
bash benchmarks/gpu_compile_cache.sh restore .gpu/compile_cache > "$out/compile_cache_restore.log" 2>&1; step "compile cache restore rc=$?"
if [ "$stage" = chunked ]; then
  for engine in vllm-8192 vllm-2048 vllm-512; do
    ctl start --engine "$engine"; step "$engine start rc=$?"
    ctl measure --engine "$engine" --parts chunked-prefill; step "$engine chunked-prefill rc=$?"
  done
  ctl stop; step "stop rc=$?"
  python3 benchmarks/speculative_h200.py run --out "$out/speculative"; step "speculative rc=$?"
  python3 benchmarks/speculative_h200.py summarize --out "$out/speculative" > "$out/speculative/goals.txt" 2>&1
  step "speculative summarize rc=$?"
else
  ctl start --engine vllm-8192; step "vllm-8192 start rc=$?"
  ctl measure --engine vllm-8192 --parts preset-long-form "${LONG_FORM_SWEEP[@]}"; step "vllm-8192 long-form rc=$?"
  ctl start --engine ours-fp16 --ours-preset long-form; step "ours-fp16 start rc=$?"
  ctl measure --engine ours-fp16 --parts preset-long-form "${LONG_FORM_SWEEP[@]}"; step "ours-fp16 long-form rc=$?"
  ctl stop; step "stop rc=$?"
fi
ctl summarize > "$out/controller/goals.txt" 2>&1; step "controller summarize rc=$?"
bash benchmarks/gpu_compile_cache.sh save "$out" > "$out/compile_cache.log" 2>&1; step "compile cache saved rc=$?"
step done
