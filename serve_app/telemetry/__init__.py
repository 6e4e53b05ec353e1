"""Traces (OpenTelemetry) and metrics (Ray's Prometheus export) of the serving path."""
