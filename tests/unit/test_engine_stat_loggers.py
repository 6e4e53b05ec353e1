"""`engine_stat_loggers`: what the LLM replica hands `AsyncLLM(stat_loggers=...)`."""
from vllm.v1.metrics.loggers import PrometheusStatLogger

from serve_app.engine_stats import EngineSnapshot, engine_stat_loggers


def test_engine_metrics_go_through_rays_prometheus_logger_beside_our_snapshot():
    loggers = engine_stat_loggers(EngineSnapshot(), export_engine_metrics=True)
    assert len(loggers) == 2 and callable(loggers[0])
    # A PrometheusStatLogger subclass: vLLM then adds no in-process Prometheus logger of its own.
    assert isinstance(loggers[1], type) and issubclass(loggers[1], PrometheusStatLogger)
    assert loggers[1].__name__ == "RayPrometheusStatLogger"


def test_without_engine_metrics_only_our_snapshot_is_handed_over():
    [snapshot_factory] = engine_stat_loggers(EngineSnapshot(), export_engine_metrics=False)
    assert not isinstance(snapshot_factory, type)
