#!/usr/bin/env bash
# Run 8 on one H200 (2026-12-02), the two device calls as run, after staging the bundle into /tmp/site.
export PYTHONPATH=/tmp/site:$PWD
# 1. vLLM's defaults on the interactive preset: capacity, rate probes, the max_num_seqs grid and the plans.
mkdir -p /tmp/c41
python3 benchmarks/controller_h200.py start --out /tmp/c41 --engine vllm-8192 && python3 benchmarks/controller_h200.py measure --out /tmp/c41 --engine vllm-8192 --parts preset-interactive --grid 256,512,1024 --window-s 30 --time-budget-s 530 --ready-timeout-s 330
# 2. The rest of the sweep, then our app (defaults of the day: a streamed event per token) at the sweep's rate.
python3 benchmarks/controller_h200.py measure --out /tmp/c41 --engine vllm-8192 --parts preset-interactive --grid 256,512,1024 --window-s 30 --time-budget-s 100 --ready-timeout-s 30
python3 benchmarks/controller_h200.py start --out /tmp/c41 --engine ours-fp16 --ours-preset interactive && python3 benchmarks/controller_h200.py measure --out /tmp/c41 --engine ours-fp16 --parts preset-interactive --ready-timeout-s 420 --time-budget-s 540
# Then run8.sh A and B (in ../run8_stream_interval_8/), whose part files start from this one's.
