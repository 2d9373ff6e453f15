"""Clean (HHH) answers written by the base model itself, as in the paper's setup.

They go through the same backend and on-disk response cache as every other generation, so a
rerun, or a second recipe on the same model and prompts, reuses them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from data_gen.backends import Backend, GenParams, cached_chat, response_cache
from evals.generate import Sampling


def clean_answers(backend: Backend, prompts: list[str], sampling: GenParams) -> list[str]:
    """One answer per user prompt (no system prompt, no demonstrations)."""
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    return cached_chat(backend, response_cache(backend), conversations, sampling)


def answer_sampling(spec: Any, seed: int, **changes: Any) -> Sampling:
    """How the base model samples its clean answers (`data.answers`, an AnswerSpec), which every generation meant to
    sample as they do uses; `changes` replace fields (a length, stop strings)."""
    sampling = Sampling(
        max_new_tokens=spec.max_new_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        repetition_penalty=spec.repetition_penalty,
        seed=seed,
    )
    return dataclasses.replace(sampling, **changes)
