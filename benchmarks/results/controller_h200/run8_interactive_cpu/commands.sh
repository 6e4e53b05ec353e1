#!/usr/bin/env bash
# Made by `bash run8.sh A` (../run8_stream_interval_8/run8.sh, the exact script): its first app run, /tmp/c42a,
# our app with the day's defaults (an event per token) on the interactive preset, the sweep's part file of
# ../run8_interactive/ with its app run removed.
bash benchmarks/results/controller_h200/run8_stream_interval_8/run8.sh A
