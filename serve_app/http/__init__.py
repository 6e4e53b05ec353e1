"""The ingress's HTTP side, in pieces the ingress deployment wires together: OpenAI-shaped errors, what
is forwarded to vLLM's app, request intake (caller, class, admission door) and the response's parts."""
