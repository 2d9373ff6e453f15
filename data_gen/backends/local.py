"""Local generation with transformers, through the shared batched generation helper."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from data_gen.backends.base import Conversation, GenParams, OnResult
from evals.generate import generate
from organisms.models import ResolvedModel, load_model, load_tokenizer


class LocalBackend:
    """A local HF model (left-padded, length-grouped batches); loaded on first use."""

    def __init__(self, model: ResolvedModel, batch_size: int = 32) -> None:
        self.model = model
        self.batch_size = batch_size

    @property
    def identity(self) -> str:
        return f"local:{self.model.fingerprint}"

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        return load_tokenizer(self.model.path), load_model(self.model.path)

    def chat(
        self, conversations: list[Conversation], params: GenParams, on_result: OnResult | None = None
    ) -> list[str]:
        tokenizer, lm = self._loaded

        def report(indices: list[int], texts: list[str]) -> None:
            if on_result is not None:
                for i, text in zip(indices, texts, strict=True):
                    on_result(i, text)

        return generate(lm, tokenizer, conversations, params, self.batch_size, desc="generating", on_batch=report)
