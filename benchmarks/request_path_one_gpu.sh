#!/bin/bash
# Issue 16's parts on one H200, `vllm serve` first (its saturated run sets the load points), then ours under
# HAProxy mode with delivery by pull; started by `gpu_detached.sh start /tmp/rp benchmarks/request_path_one_gpu.sh`.
# Ours runs its parts in vLLM's order on one engine start (latency, then bursty and flood): the restart that had
# put the flood first cost ~2 min of a session's 30.
# On 2026-12-03 (one_gpu_same_session/) it took 23.3 min of device time (and 4.3 more for a prefill-budget
# flood, measured there and since dropped); with the staging and the machine's start that is most of a session.
# The second run (one_gpu_same_session_run2/): 25.1 min from `begin` to `done`, 28.9 min of device time in all
# with three staging calls (62 MB parts) and the machine's start.
# The third (2026-12-03, one_gpu_direct_machine_lost/): vLLM's parts 13.4 min with its cold first start (251 s to
# healthy, the synthetic checkpoint's 21 s in it), ours healthy 104 s after its start; the machine was lost
# between two wait calls 20 min in. gpu_compile_cache.sh now carries the compile caches to the next machine.
# The fourth (2026-12-04, one_gpu_direct_two_machines/): vLLM healthy 89 s after its start on the carried compile
# caches, its parts 9.5 min; the machine was lost after a 560 s wait; ours' parts on a fresh one took 10.8 min.
# The fifth (2026-12-04, one_gpu_direct_same_machine_latency/): the latency parts alone (PARTS="latency" now),
# vLLM's 5.5 min and ours' 5.2 min on one machine after the session's first was lost (given back idle).
# The sixth (the same session, one_gpu_direct_same_machine_bursty/): PARTS=bursty FLOOD=0 with that run's
# latency.json carried, 7.8 min from begin to done on a third machine.
# The seventh and eighth (2026-12-04, one machine, one_gpu_direct_bursty_ours_first/ and _vllm_first/): PARTS=bursty
# FLOOD=0 with ORDER="ours vllm" and BURSTY_POINT_S=60 (14.4 min begin to done, ours compiling from nothing),
# then the default order with BURSTY_POINT_S=30 (9.1 min on the first's caches).
# FRONT=haproxy-direct (in the environment of `gpu_detached.sh start`) runs ours with delivery direct
# (`serve_app.direct_link`) instead of by pull.
out=$1
front=${FRONT:-haproxy}
progress="$out/progress"  # gpu_detached.sh's wait reads it
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
# An earlier session's compile caches, where carried (.gpu/compile_cache/, gpu_compile_cache.sh): a warm first start.
bash benchmarks/gpu_compile_cache.sh restore .gpu/compile_cache > "$out/compile_cache_restore.log" 2>&1; step "compile cache restore rc=$?"
# SERVE_HOP=1: first the floor under our two Ray hops on this host (a bare handle call and a streamed item, and
# the same over TCP; ~1 min of device time, no GPU): measured on an H200 host on 2026-12-03
# (latency_h200/one_gpu_direct_machine_lost/serve_hop.json), so off by default.
if [ "${SERVE_HOP:-0}" = 1 ]; then
  python3 benchmarks/serve_hop.py --out "$out/serve_hop.json" > "$out/serve_hop.log" 2>&1; step "serve_hop rc=$?"
fi
# RESUME_FROM=DIR (a carried folder holding what a lost machine's last wait brought back: its progress and
# part files, as run.tgz/points.tgz/detail.tgz unpack): the parts it finished are not run again, their files
# are taken as they are (another machine: the README says so wherever a run is put together this way).
resume=${RESUME_FROM:-}
if [ -n "$resume" ]; then
  find "$resume" -maxdepth 1 -name '*.json' ! -name servers.json -exec cp {} "$out/" \;  # pids of another machine
  cp "$resume/progress" "$out/resumed_from.progress"
  step "resumed from $resume"
fi
finished() { [ -n "$resume" ] && grep -q " $1 rc=0$" "$resume/progress"; }
# PARTS="latency": the latency part alone for both servers (default "latency bursty"; bursty brings the flood
# and takes its load points from latency.json, so PARTS="bursty" needs a RESUME_FROM folder holding one);
# summarize then writes the goals of the parts measured.
parts=${PARTS:-latency bursty}
# FLOOD=0: the bursty part's load points without the flood (its goals then come from another run).
# BURSTY_POINT_S: each bursty point's length (default 20 s: 104 requests at 25%, whose p99 is their second
# slowest; 60 s gives 312, 624 and 936 requests at 25, 50 and 75%).
bursty_args=(--point-s "${BURSTY_POINT_S:-20}")
[ "${FLOOD:-1}" = 0 ] && bursty_args+=(--skip-flood)
asked() { [[ " $parts " == *" $1 "* ]]; }
label_of() { [ "$2" = latency ] && echo "$1 latency" || echo "$1 bursty+flood"; }
pending() { asked "$2" && ! finished "$(label_of "$1" "$2")"; }  # SERVER PART
run_part() {  # SERVER PART [ARGS]: the part unless PARTS leaves it out or an earlier machine finished it
  local server=$1 part=$2 label
  label=$(label_of "$1" "$2"); shift 2
  if ! asked "$part"; then step "$label not asked for (PARTS=$parts)"; return; fi
  if finished "$label"; then step "$label skipped (finished on the earlier machine)"; return; fi
  rp measure --part "$part" --only "$server" "$@"; step "$label rc=$?"
}
run_server() {  # SERVER: its start, its parts, its stop
  local server=$1 start_args=()
  pending "$server" latency || pending "$server" bursty || return 0
  [ "$server" = ours ] && start_args=(--front "$front")
  rp start --only "$server" "${start_args[@]}"; step "$(server_label "$server") start rc=$?"
  run_part "$server" latency
  run_part "$server" bursty "${bursty_args[@]}"
  rp stop --only "$server"
  gpu_free
}
server_label() { [ "$1" = ours ] && echo "ours ($front)" || echo "$1"; }
# ORDER="ours vllm": ours first (default "vllm ours"). vLLM's saturated run sets every load point, so ours
# goes first only where vLLM's latency part is already done (PARTS=bursty with a RESUME_FROM folder).
order=${ORDER:-vllm ours}
if [ "${order%% *}" = ours ] && pending vllm latency; then
  step "ORDER=$order needs vLLM's latency part done first (its capacity sets the load points)"; step done; exit 2
fi
for server in $order; do run_server "$server"; done
summary_scope=()
asked bursty || summary_scope=(--latency-only)
rp summarize "${summary_scope[@]}" > "$out/goals.txt" 2>&1; step "summarize rc=$?"
bash benchmarks/gpu_compile_cache.sh save "$out" > "$out/compile_cache.log" 2>&1; step "compile cache saved rc=$?"
step done
