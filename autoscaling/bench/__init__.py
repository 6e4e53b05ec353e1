"""The reusable parts of the benchmarks behind `llmserve bench`: servers started in the background,
`vllm bench serve` commands and their results' summaries, Prometheus scraping, priority-run reports.

The recipes that use them (argument parsing and a sequence of steps) and their recorded results
live in `benchmarks/`, indexed by `benchmarks/index.yaml`. Ray Serve deployments the benchmarks
need stay in `serve_app/bench/` (Ray workers import them).
"""
