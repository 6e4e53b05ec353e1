#!/usr/bin/env bash
# run 8 on one H200: our app on the interactive preset (default, then stream_interval 8), the mixed preset with it.
set -x
export PYTHONPATH=/tmp/site:$PWD
B="python3 benchmarks/controller_h200.py"
strip() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.pop('app_run',None); json.dump(d,open(sys.argv[2],'w'),indent=2)" "$1" "$2"; }
SI='{"engine": {"extra": {"stream_interval": 8}}}'
case "$1" in
A)
  for d in a b; do mkdir -p /tmp/c42$d; strip benchmarks/results/controller_h200/run8_interactive/preset-interactive.json /tmp/c42$d/preset-interactive.json; done
  $B start --out /tmp/c42a --engine ours-fp16 --ours-preset interactive && $B measure --out /tmp/c42a --engine ours-fp16 --parts preset-interactive --ready-timeout-s 330 --time-budget-s 380
  $B stop --out /tmp/c42a
  $B start --out /tmp/c42b --engine ours-fp16 --ours-preset interactive --ours-sections "$SI" && $B measure --out /tmp/c42b --engine ours-fp16 --parts preset-interactive --ready-timeout-s 200 --time-budget-s 200
  $B stop --out /tmp/c42b
  tar czf $OUT/c42.tgz -C /tmp c42a c42b ;;
B)
  mkdir -p /tmp/c42c; strip benchmarks/results/controller_h200/preset-mixed.json /tmp/c42c/preset-mixed.json
  $B start --out /tmp/c42c --engine ours-fp16 --ours-preset mixed --ours-sections "$SI" && $B measure --out /tmp/c42c --engine ours-fp16 --parts preset-mixed --ready-timeout-s 250 --time-budget-s 400
  $B stop --out /tmp/c42c
  tar czf $OUT/c42c.tgz -C /tmp c42c ;;
esac
