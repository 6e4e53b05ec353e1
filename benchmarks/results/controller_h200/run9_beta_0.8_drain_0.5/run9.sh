#!/usr/bin/env bash
# run 9 on one H200: our app on the mixed preset under window variants, each: run9.sh NAME 'SECTIONS_JSON' [ready_timeout]
set -x
export PYTHONPATH=/tmp/site:$PWD
B="python3 benchmarks/controller_h200.py"
name=$1; sections=$2; ready=${3:-200}
d=/tmp/c50_$name; mkdir -p $d
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.pop('app_run',None); json.dump(d,open(sys.argv[2],'w'),indent=2)" benchmarks/results/controller_h200/preset-mixed.json $d/preset-mixed.json
$B start --out $d --engine ours-fp16 --ours-preset mixed --ours-sections "$sections" && $B measure --out $d --engine ours-fp16 --parts preset-mixed --ready-timeout-s $ready --time-budget-s 540
$B stop --out $d
python3 -c "
import json,sys; a=json.load(open(sys.argv[1]))['app_run']; print('RESULT', sys.argv[2], 'att', round(a['slo_attainment'],3), 'ttft p50/p99', round(a['ttft_p50_s'],3), round(a['ttft_p99_s'],2), 'tpot p50/p99', round(a['tpot_p50_s'],3), round(a['tpot_p99_s'],3), a['slo_missed'])" $d/preset-mixed.json $name
tar czf $OUT/c50_$name.tgz -C /tmp c50_$name
