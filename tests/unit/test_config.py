"""Loading and validating the service configuration (serve_app/config.py)."""

from pathlib import Path

import pytest

from serve_app.config import ConfigError, ModelSettings, load_config, parse_config
from serve_app.memory.presets import get_preset
from serve_app.policy.window_controller import FixedRatioTuning
from serve_app.synthetic_model import SHAPES

CLASSES = """
priority_classes:
  - {name: gold, ttft_slo_s: 0.2, tpot_slo_s: 0.05, queue_deadline_s: 1}
  - {name: bronze, ttft_slo_s: 5, tpot_slo_s: 0.5, queue_deadline_s: 30}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_embedded_default_is_tiny_synthetic_model_on_cpu():
    cfg = load_config(None)
    assert cfg.model.path is None
    assert cfg.model.synthetic_shape == "tiny" and cfg.model.synthetic_shape in SHAPES
    assert cfg.replicas.num_gpus == 0
    assert cfg.model.resolved_path() == Path(cfg.model.cache_dir) / "tiny"
    assert cfg.default_priority in [c.name for c in cfg.priority_classes]


def test_yaml_file_round_trips(tmp_path):
    text = CLASSES + """
default_priority: bronze
model: {path: /models/llama, served_name: llama-awq, quantization: awq_marlin}
engine: {max_model_len: 4096, gpu_memory_utilization: 0.8, extra: {swap_space: 2}}
replicas: {num_replicas: 3, num_gpus: 1, env: {FOO: bar}}
http: {port: 9001}
"""
    cfg = load_config(write(tmp_path, text))
    assert (cfg.model.path, cfg.model.served_name, cfg.model.quantization) == ("/models/llama", "llama-awq", "awq_marlin")
    assert (cfg.engine.max_model_len, cfg.engine.gpu_memory_utilization) == (4096, 0.8)
    assert cfg.engine.extra == {"swap_space": 2}
    assert (cfg.replicas.num_replicas, cfg.replicas.num_gpus, cfg.replicas.env) == (3, 1, {"FOO": "bar"})
    assert cfg.http.port == 9001
    assert [c.name for c in cfg.priority_classes] == ["gold", "bronze"]
    assert cfg.priority_classes[0].ttft_slo_s == 0.2
    assert cfg.default_priority == "bronze"
    # Fields the file leaves out keep their defaults.
    assert cfg.engine.activation_dtype(on_gpu=True) == "float16" and cfg.http.host == "127.0.0.1"


def test_empty_file_gives_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == load_config(None)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("engine: {max_model_len: -1}", "engine.max_model_len"),
        ("engine: {bogus: 1}", "engine.bogus"),
        ("replicas: {num_gpus: -1}", "replicas.num_gpus"),
        ("engine: {gpu_memory_utilization: 1.5}", "engine.gpu_memory_utilization"),
        ("model: {quantization: gptq}", "model.quantization"),
        ("http: {port: 70000}", "http.port"),
        ("priority_classes: [{name: a, ttft_slo_s: 0, tpot_slo_s: 1, queue_deadline_s: 1}]\ndefault_priority: a",
         "priority_classes.0.ttft_slo_s"),
    ],
)
def test_bad_field_is_named(tmp_path, text, field):
    assert field in load_error(tmp_path, text)


def test_duplicate_priority_class_names(tmp_path):
    text = CLASSES + "  - {name: gold, ttft_slo_s: 1, tpot_slo_s: 1, queue_deadline_s: 1}\ndefault_priority: gold\n"
    message = load_error(tmp_path, text)
    assert "priority_classes" in message and "duplicate" in message and "gold" in message


def test_default_priority_must_be_a_class(tmp_path):
    message = load_error(tmp_path, CLASSES + "default_priority: silver\n")
    assert "default_priority" in message and "silver" in message


def test_default_priority_checked_against_default_classes(tmp_path):
    assert "default_priority" in load_error(tmp_path, "default_priority: gold\n")


def test_empty_priority_classes(tmp_path):
    message = load_error(tmp_path, "priority_classes: []\n")
    assert "priority_classes" in message and "at least one" in message


def test_missing_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml(tmp_path):
    assert "not valid YAML" in load_error(tmp_path, "engine: {max_model_len: 1\n  - ]")


def test_top_level_list(tmp_path):
    assert "mapping" in load_error(tmp_path, "- engine\n- model\n")


def test_priority_rank_follows_file_order(tmp_path):
    default = load_config(None)
    assert default.priority_rank(default.priority_classes[0].name) == 0
    assert [default.priority_rank(n) for n in ("interactive", "standard", "batch")] == [0, 1, 2]
    cfg = load_config(write(tmp_path, CLASSES + "default_priority: gold\n"))
    assert (cfg.priority_rank("gold"), cfg.priority_rank("bronze")) == (0, 1)


def test_resolved_path_prefers_explicit_path(tmp_path):
    explicit = ModelSettings(path="/models/llama", cache_dir=str(tmp_path), synthetic_shape="llama3-8b")
    assert explicit.resolved_path() == Path("/models/llama")
    generated = ModelSettings(cache_dir=str(tmp_path), synthetic_shape="llama3-8b")
    assert generated.resolved_path() == tmp_path / "llama3-8b"


def test_window_tuning_is_checked_against_the_chosen_controller():
    """Once a valid-looking config that stopped routing: the default tuning (slow start) made the
    fixed-ratio controller raise TypeError inside the router's refresh loop, after start. Now each
    controller's knobs are a typed model, checked at load with the field named."""
    fixed = parse_config({"router": {"window_controller": "fixed_ratio"}}).router
    assert (fixed.window_controller, fixed.window_tuning) == ("fixed_ratio", FixedRatioTuning())
    default = parse_config({}).router
    assert (default.window_controller, default.window_tuning.slow_start) == ("aimd", True)
    with pytest.raises(ConfigError, match=r"router\.window_tuning\.fixed_ratio\.slow_start: Extra inputs"):
        parse_config({"router": {"window_controller": "fixed_ratio", "window_tuning": {"slow_start": True}}})


@pytest.mark.parametrize(("router", "message"), [
    ({"window_controller": "aimd", "window_tuning": {"beta": 1.5}}, r"router\.window_tuning\.aimd\.beta: Input "
     r"should be less than 1"),
    ({"window_controller": "pid"}, r"router: Value error, window_controller: 'pid' is not one of"),
    ({"window_controller": "aimd", "window_tuning": {"kind": "fixed_ratio"}},
     r"window_tuning\.kind 'fixed_ratio' is not the window_controller 'aimd'"),
])
def test_bad_window_controller_or_knob_fails_at_load_naming_the_field(router, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"router": router})


@pytest.mark.parametrize("router", [
    {}, {"window_controller": "aimd", "window_tuning": {"beta": 0.7}}, {"window_tuning": {"increase_every": 2}},
    {"window_controller": "fixed_ratio", "window_tuning": None}, {"window_tuning": {"kind": "fixed_ratio"}},
])
def test_window_settings_in_either_spelling_round_trip_through_the_rendered_form(router):
    """The rendered config (manifests) carries `window_tuning: {kind: ...}` and `window_controller`."""
    config = parse_config({"router": router})
    assert parse_config(config.model_dump(mode="json")) == config
    assert config.router.window_controller == config.router.window_tuning.kind


@pytest.mark.parametrize("name", ["interactive", "batch"])
def test_a_default_class_promises_what_its_preset_sizes_for(name):
    """Once two definitions: interactive TPOT 0.1 s here vs 0.05 s in the preset, batch 1.0 s vs 0.25 s."""
    klass = next(c for c in parse_config({}).priority_classes if c.name == name)
    preset = get_preset(name)
    assert (klass.ttft_slo_s, klass.tpot_slo_s) == (preset.ttft_s, preset.tpot_s)


@pytest.mark.parametrize(("engine", "num_gpus", "dtype"), [
    ({}, 1, "float16"),
    ({"kv_cache_dtype": "fp8"}, 1, "bfloat16"),  # FlashAttention 3 attends in FP8 only with bfloat16 output
    ({"kv_cache_dtype": "fp8"}, 0, "float16"),  # the CPU build has no such kernel constraint
    ({"kv_cache_dtype": "fp8", "dtype": "float16"}, 1, "float16"),  # a pinned dtype wins
    ({"dtype": "auto"}, 1, "auto"),
])
def test_engine_runs_in_bfloat16_only_for_an_fp8_kv_cache_on_a_gpu(tmp_path, engine, num_gpus, dtype):
    from serve_app.engine_args import engine_args_from_config

    config = parse_config({"model": {"cache_dir": str(tmp_path)}, "engine": engine, "replicas": {"num_gpus": num_gpus}})
    assert engine_args_from_config(config).dtype == dtype


def test_engine_streams_eight_tokens_per_event_unless_configured(tmp_path):
    from serve_app.engine_args import engine_args_from_config

    default = parse_config({"model": {"cache_dir": str(tmp_path)}})
    assert engine_args_from_config(default).stream_interval == 8
    per_token = parse_config({"model": {"cache_dir": str(tmp_path)}, "engine": {"stream_interval": 1}})
    assert engine_args_from_config(per_token).stream_interval == 1
    with pytest.raises(ValueError):
        parse_config({"engine": {"stream_interval": 0}})
