#!/usr/bin/env bash
# run 9 sustained: our app, mixed arrivals 120 s at 1.0x preset-mixed's rate, one window variant: run9s.sh NAME 'SECTIONS_JSON'
set -x
export PYTHONPATH=/tmp/site:$PWD
B="python3 benchmarks/controller_h200.py"
name=$1; sections=$2
d=/tmp/c51_$name; mkdir -p $d
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['runs']={'vllm-defaults': d['runs']['vllm-defaults']}; json.dump(d,open(sys.argv[2],'w'),indent=2)" benchmarks/results/controller_h200/sustained.json $d/sustained.json
$B start --out $d --engine ours-fp16 --ours-preset mixed --ours-sections "$sections" && $B measure --out $d --engine ours-fp16 --parts sustained --sustained-loads 1.0 --sustained-client-cap 1024 --ready-timeout-s 200 --time-budget-s 560
$B stop --out $d
tar czf $OUT/c51_$name.tgz -C /tmp c51_$name
