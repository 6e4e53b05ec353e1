"""llmserve: priority-aware, adaptively batched LLM serving on Ray Serve over vLLM."""
