"""Load-test driver: open-loop (or closed-loop) streaming OpenAI load with priority classes, per-class
latency/throughput/goodput statistics, rate sweeps and plots. `python -m autoscaling.loadtest --help`."""
