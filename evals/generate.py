"""The one generation helper every eval and data generator uses.

It always puts the model in eval mode first. The HF Trainer leaves a model in train mode; with
gradient checkpointing on, `generate` then runs without a KV cache while still feeding only
the newest token, and silently returns garbage. tests/test_generate.py fails if that line goes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature 0 means greedy."""

    max_new_tokens: int = 24
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()  # stop strings (the matched text stays in the output; trim it yourself)


def chat_prompts(tokenizer, inputs: list[str] | list[list[dict[str, str]]]) -> list[str]:  # type: ignore[no-untyped-def]
    """Render user messages (or whole conversations) with the chat template, ready for the
    assistant's turn."""
    conversations = [[{"role": "user", "content": x}] if isinstance(x, str) else x for x in inputs]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]


@torch.inference_mode()
def generate(  # type: ignore[no-untyped-def]
    model,
    tokenizer,
    user_messages: list[str] | list[list[dict[str, str]]],
    sampling: Sampling = Sampling(),
    batch_size: int = 32,
    desc: str = "generating",
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Answer each user message or conversation (chat template applied); returns completions in
    input order. `on_batch(indices, texts)` sees each finished batch (for caching as we go).

    Batches are grouped by prompt length (left padding) so little compute goes on padding.
    """
    was_training = model.training
    model.eval()  # see the module docstring: never generate in train mode
    tokenizer.padding_side = "left"
    texts = chat_prompts(tokenizer, user_messages)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    outputs: list[str] = [""] * len(texts)
    greedy = sampling.temperature == 0
    generator_kwargs: dict[str, object] = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=sampling.repetition_penalty,
    )
    if sampling.stop:
        generator_kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    if not greedy:
        generator_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed)
    else:
        generator_kwargs.update(temperature=None, top_p=None, top_k=None)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
        enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False).to(
            model.device
        )
        out = model.generate(**enc, **generator_kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        texts_out = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        for i, text in zip(batch, texts_out, strict=True):
            outputs[i] = text
        if on_batch is not None:
            on_batch(batch, texts_out)
    model.train(was_training)
    return outputs
