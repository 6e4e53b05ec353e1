"""A calibrated simulator of vLLM replicas behind our router, for comparing autoscaling policies.

`step_model` (engine step time, fitted by `fit` to H100 measurements), `replica` (continuous
batching over a KV block pool with preemption), `cluster` (replicas behind the real
`RouterCore`, with an autoscaler, start-up delay and drain), `autoscalers` (Ray Serve's default
policy and an adapter for `autoscaling.llm_policy`), `workload` (arrivals), `report` (stats).
"""
