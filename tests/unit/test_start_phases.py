from autoscaling.bench.start_phases import start_phases

LOG = """
(ServeController pid=4277) INFO 2026-11-30 11:15:17,481 controller 4277 -- Adding 1 replica to Deployment(name='LLMReplica', app='llmserve').
(ServeReplica:llmserve:LLMReplica pid=1) INFO 11-30 12:00:01 [default_loader.py:262] Loading weights took 3.21 seconds
(ServeReplica:llmserve:LLMReplica pid=1) INFO 11-30 12:00:02 [gpu_model_runner.py:2653] Model loading took 3.8 GiB and 4.500000 seconds
(EngineCore_DP0 pid=2) INFO [backends.py:548] Dynamo bytecode transform time: 9.50 s
(EngineCore_DP0 pid=2) INFO [backends.py:161] Directly load the compiled graph(s) for dynamic shape from the cache, took 2.10 s
(EngineCore_DP0 pid=2) INFO [backends.py:393] Compiling a graph for compile range (1, 1792) takes 7.70 s
(EngineCore_DP0 pid=2) INFO [monitor.py:53] torch.compile took 11.60 s in total
(EngineCore_DP0 pid=2) INFO [gpu_model_runner.py:3480] Graph capturing finished in 12 secs, took 0.55 GiB
(EngineCore_DP0 pid=2) INFO [core.py:210] init engine (profile, create kv cache, warmup model) took 40.02 seconds
(ServeReplica:llmserve:LLMReplica pid=1) INFO replica abc: engine ready in 61.3s, 15000 KV blocks of 16
INFO 2026-11-30 11:16:23,584 serve 3142 -- Application 'llmserve' is ready at http://127.0.0.1:8000/.
"""


def test_phases_are_read_from_vllm_and_replica_lines():
    phases = start_phases(LOG)
    assert phases == {"weights_load_s": 3.21, "model_load_s": 4.5, "dynamo_transform_s": 9.5,
                      "graph_compile_s": 7.7, "torch_compile_total_s": 11.6, "cuda_graph_capture_s": 12.0, "engine_init_s": 40.02,
                      "replica_engine_ready_s": 61.3, "compile_cache_hit": True,
                      "replica_added_to_ready_s": 66.1}


def test_an_eager_start_has_no_compile_phases():
    phases = start_phases("Loading weights took 1.50 seconds\ninit engine (profile, create kv cache, warmup model) took 8.00 s\n")
    assert phases == {"weights_load_s": 1.5, "engine_init_s": 8.0, "compile_cache_hit": False}
