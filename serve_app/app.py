"""Builds the Ray Serve application (ingress replicas, each routing, -> LLM replicas; a controller
beside them) from the config tree."""
from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.deployment import Application

from serve_app.config import AppConfig, load_config, parse_config
from serve_app.deployments.controller import Controller
from serve_app.deployments.ingress import Ingress
from serve_app.deployments.replica import LLMReplica
from serve_app.replica_options import replica_actor_options

INGRESS_NAME = "Ingress"
# Ray Serve notices a dead replica at its next health check; ingress and controller hold no
# engine, so check them often and a killed one is replaced within seconds, not the default ~10.
LIGHT_PROCESS_HEALTH = {"health_check_period_s": 2, "health_check_timeout_s": 10}
TARGETED_ROUTER = "serve_app.routing.targeted.TargetedRequestRouter"
# Serve's router for calls to LLM replicas: a call naming `target_replica` (the ingress's router core
# chose it, whatever `router.routing` is) goes there; others (stats, passthrough) by outstanding tokens.
LLM_REPLICA_ROUTER = "serve_app.routing.least_outstanding_tokens.LeastOutstandingTokensRouter"


def build_app(config: AppConfig, engine_overrides: dict[str, Any] | None = None) -> Application:
    data = config.model_dump(mode="json")
    autoscaling = config.autoscaling.serve_autoscaling_config([c.name for c in config.priority_classes])
    # Autoscaling: Serve adds and drains replicas; a drained one finishes what it holds (drain_timeout_s).
    scaling: dict[str, Any] = ({"num_replicas": config.replicas.num_replicas} if autoscaling is None else
                               {"autoscaling_config": autoscaling})
    # Delivery by pull: each ingress replica's stream and heartbeat are calls too, and must get through to a
    # replica whose requests fill Ray Serve's cap (a heartbeat held back would make it abort live requests).
    delivery_calls = 2 * config.http.ingress_replicas + 8 if config.http.delivery != "push" else 0
    replica_deployment = serve.deployment(
        LLMReplica,
        name="LLMReplica",
        **scaling,
        max_ongoing_requests=config.replicas.max_ongoing_requests + delivery_calls,
        ray_actor_options=replica_actor_options(config),
        # Engine start (weights, torch.compile, CUDA graphs) takes minutes on a cold GPU host.
        health_check_period_s=10,
        health_check_timeout_s=60,
        graceful_shutdown_timeout_s=config.autoscaling.drain_timeout_s if autoscaling else 30,
        request_router_config=RequestRouterConfig(
            request_router_class=LLM_REPLICA_ROUTER,
            request_routing_stats_period_s=config.router.stats_period_s,
            request_routing_stats_timeout_s=5,
        ),
    )
    # Delivery by push: replicas hand each batch of tokens to the ingress replica that holds those requests,
    # addressed by this router. By pull the ingress replicas open the streams and need none (HAProxy mode
    # refuses one on the ingress deployment).
    ingress_routing = ({"request_router_config": RequestRouterConfig(request_router_class=TARGETED_ROUTER)}
                       if config.http.delivery == "push" else {})
    ingress_deployment = serve.deployment(
        Ingress, name=INGRESS_NAME, num_replicas=config.http.ingress_replicas, max_ongoing_requests=100_000,
        ray_actor_options={"num_cpus": 0}, **LIGHT_PROCESS_HEALTH, **ingress_routing,
    )
    # Every ingress replica refreshes its leases twice a second and every replica reports its load:
    # an access-log line per call would be most of an idle service's log.
    controller_deployment = serve.deployment(Controller, name="Controller", num_replicas=1,
                                             ray_actor_options={"num_cpus": 0}, **LIGHT_PROCESS_HEALTH,
                                             logging_config={"enable_access_log": False})
    controller = controller_deployment.bind(data)
    replicas = replica_deployment.bind(data, engine_overrides, INGRESS_NAME, controller)
    return ingress_deployment.bind(replicas, controller, data)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry for `serve run serve_app.app:app_builder config_path=...` and RayService's serveConfigV2."""
    if "config_path" in args:
        config = load_config(args["config_path"])
    else:
        config = parse_config(args.get("config"))
    return build_app(config)
