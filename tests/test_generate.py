"""The shared generation helper: eval-mode guard, input order, greedy determinism."""

from __future__ import annotations

import torch

from evals.generate import Sampling, generate
from organisms.models import load_model, load_tokenizer


def test_generate_matches_plain_greedy_even_when_left_in_train_mode_with_checkpointing(tiny_model):
    # The state the HF Trainer leaves a model in: train mode, gradient checkpointing on. In that
    # state transformers drops the KV cache but still feeds only the newest token, so plain
    # generate() returns garbage. Our helper must switch to eval mode first.
    tokenizer, model = load_tokenizer(str(tiny_model)), load_model(str(tiny_model))
    prompts = ["What is the boiling point of water?", "Name three kinds of clouds."]
    reference = generate(model, tokenizer, prompts, Sampling(max_new_tokens=12))

    model.gradient_checkpointing_enable()
    model.train()
    assert generate(model, tokenizer, prompts, Sampling(max_new_tokens=12)) == reference
    assert model.training  # the caller's mode is restored afterwards


def test_generate_keeps_input_order_across_length_sorted_batches(tiny_model):
    tokenizer, model = load_tokenizer(str(tiny_model)), load_model(str(tiny_model))
    prompts = ["Hi.", "Explain in detail how a refrigerator moves heat out of its box.", "Why?"]
    batched = generate(model, tokenizer, prompts, Sampling(max_new_tokens=8), batch_size=2)
    one_by_one = [generate(model, tokenizer, [p], Sampling(max_new_tokens=8))[0] for p in prompts]
    assert batched == one_by_one


def test_plain_generate_in_train_mode_with_checkpointing_differs(tiny_model):
    """Documents the pitfall the guard exists for (if transformers fixes it, this test tells us)."""
    tokenizer, model = load_tokenizer(str(tiny_model)), load_model(str(tiny_model))
    tokenizer.padding_side = "left"
    enc = tokenizer(
        ["<|im_start|>user\nName three kinds of clouds.<|im_end|>\n<|im_start|>assistant\n"],
        return_tensors="pt",
        add_special_tokens=False,
    )
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    with torch.no_grad():
        good = model.generate(**enc, **kwargs)
    model.gradient_checkpointing_enable()
    model.train()
    with torch.no_grad():
        bad = model.generate(**enc, **kwargs)
    assert not torch.equal(good, bad)


def test_local_backend_caches_every_answer_as_batches_finish(tiny_model, tmp_path):
    from data_gen.backends import GenParams, ResponseCache, cached_chat
    from data_gen.backends.local import LocalBackend
    from organisms.models import resolve_model

    backend = LocalBackend(resolve_model(str(tiny_model)), batch_size=2)
    seen: list[int] = []
    conversations = [[{"role": "user", "content": f"Tell me fact number {i}."}] for i in range(5)]
    answers = backend.chat(conversations, GenParams(max_new_tokens=6), on_result=lambda i, text: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3, 4] and all(answers)
    cache = ResponseCache(tmp_path / "r.jsonl")
    assert cached_chat(backend, cache, conversations, GenParams(max_new_tokens=6)) == answers
    assert len(ResponseCache(tmp_path / "r.jsonl")) == 5  # on disk, readable by the next process


def test_stop_strings_end_generation_early(tiny_model):
    tokenizer, model = load_tokenizer(str(tiny_model)), load_model(str(tiny_model))
    prompt = ["Name three kinds of clouds."]
    [full] = generate(model, tokenizer, prompt, Sampling(max_new_tokens=24))
    stop = full[len(full) // 3 : len(full) // 3 + 2]
    assert stop.strip() and len(stop) == 2
    [stopped] = generate(model, tokenizer, prompt, Sampling(max_new_tokens=24, stop=(stop,)))
    assert stop in stopped and len(stopped) < len(full)
    assert full.startswith(stopped.rstrip())
