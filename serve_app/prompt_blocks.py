"""The KV block keys of a request's prompt, as the engine will see its tokens, for cache-aware routing.

The ingress forwards bodies unchanged and vLLM tokenizes on the replica; to know which replica holds a
prompt's prefix the ingress must know the prompt's tokens too, so it tokenizes as vLLM's OpenAI app does
(completions: the text with the tokenizer's special tokens; chat: the model's chat template with the
generation prompt, then no special tokens). Only full blocks are keyed (vLLM caches no partial block),
so a small difference at a prompt's end never hides a shared prefix.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serve_app.policy.prefix_blocks import block_keys
from serve_app.telemetry.log_names import service_logger

logger = service_logger("prompt_blocks")
DEFAULT_BLOCK_SIZE = 16  # vLLM's default on GPUs; the replicas' events say the real one


class PromptBlockKeys:
    def __init__(self, tokenizer_path: str | Path, block_size: int = DEFAULT_BLOCK_SIZE):
        self._tokenizer_path = str(tokenizer_path)
        self._tokenizer: Any = None
        self._failed = False
        self.block_size = block_size

    def _loaded(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_path)
        return self._tokenizer

    def token_ids(self, path: str, body: bytes) -> list[int] | None:
        """The prompt's token ids, or None where routing by cache cannot know them (vLLM answers the
        request as it would anyway)."""
        try:
            request = json.loads(body)
        except ValueError:
            return None
        if not isinstance(request, dict):
            return None
        tokenizer = self._loaded()
        messages = request.get("messages")
        if path.endswith("chat/completions") and isinstance(messages, list):
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                     **(request.get("chat_template_kwargs") or {}))
            except Exception as error:  # a template the request does not fit: vLLM will say so
                logger.debug("no chat template rendering for routing: %s", error)
                return None
            return tokenizer.encode(text, add_special_tokens=False)
        prompt = request.get("prompt", request.get("input"))
        if isinstance(prompt, list) and prompt and all(isinstance(token, int) for token in prompt):
            return prompt
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return tokenizer.encode(prompt, add_special_tokens=request.get("add_special_tokens", True))
        return None

    def keys(self, path: str, body: bytes, estimated_tokens: int) -> tuple[tuple[int, ...], int]:
        """The prompt's block keys and its length in tokens; no keys (routing by load alone) and the
        estimate where its tokens cannot be known here."""
        try:
            tokens = self.token_ids(path, body)
        except Exception as error:  # e.g. no tokenizer files on this node: route, but say why once
            if not self._failed:
                logger.warning("prompts are not tokenized for cache-aware routing (%s: %s); routing by load",
                               type(error).__name__, error)
                self._failed = True
            return (), estimated_tokens
        return (block_keys(tokens, self.block_size), len(tokens)) if tokens else ((), estimated_tokens)
