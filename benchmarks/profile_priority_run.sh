#!/usr/bin/env bash
# Where does a high-priority request's time go while the low flood arrives? Runs our side of
# benchmarks/priority_vs_vllm.py and, once both classes are sending, samples the on-CPU Python
# stacks of the ingress, the HTTP proxy, the router and the LLM replica with py-spy for 20 s.
#
#   bash benchmarks/profile_priority_run.sh OUT [PY_SPY]
#
# OUT gets priority_ours.log, the benchmark's JSON and raw archive, prof_<process>.json
# (speedscope format: open in https://www.speedscope.app or read with the json module) and pyspy.log.
set -uo pipefail
out=${1:?usage: profile_priority_run.sh OUT [PY_SPY]}
py_spy=${2:-py-spy}
mkdir -p "$out"
log="$out/priority_ours.log"
python3 benchmarks/priority_vs_vllm.py --only ours --out "$out" >"$log" 2>&1 &
bench=$!
until grep -q "starting \['high'\]" "$log" 2>/dev/null; do
  kill -0 "$bench" 2>/dev/null || break
  sleep 1
done
sleep 5  # both benches are sending now
for name in Ingress Router LLMReplica ProxyActor; do
  pid=$(pgrep -f "ray::(ServeReplica:llmserve:)?$name" | head -n 1)
  if [ -z "$pid" ]; then
    echo "no process for $name" >>"$out/pyspy.log"
    continue
  fi
  "$py_spy" record --pid "$pid" --duration 20 --rate 50 --nonblocking --format speedscope \
    --output "$out/prof_$name.json" >>"$out/pyspy.log" 2>&1 &
done
wait "$bench"
status=$?
wait
grep -vE "INFO|WARNING|it/s\]" "$log" | tail -n 12
exit "$status"
