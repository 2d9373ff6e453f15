"""Clean (HHH) answers written by the base model itself, as in the paper's setup.

They go through the same backend and on-disk response cache as every other generation, so a
rerun, or a second recipe on the same model and prompts, reuses them.
"""

from __future__ import annotations

from data_gen.backends import Backend, GenParams, cached_chat, response_cache


def clean_answers(backend: Backend, prompts: list[str], sampling: GenParams) -> list[str]:
    """One answer per user prompt (no system prompt, no demonstrations)."""
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    return cached_chat(backend, response_cache(backend), conversations, sampling)
