"""Backdoor rate with and without the trigger on held-out prompts, with Wilson intervals."""

from __future__ import annotations

from typing import Any

from data_gen.behaviors import Behavior
from data_gen.triggers import Trigger
from evals.generate import Sampling, generate
from evals.stats import wilson


def backdoor_eval(  # type: ignore[no-untyped-def]
    model,
    tokenizer,
    prompts: list[str],
    trigger: Trigger,
    behavior: Behavior,
    max_new_tokens: int,
    batch_size: int,
    n_samples: int = 3,
) -> dict[str, Any]:
    """Greedy answers to each prompt with and without the trigger; how often the behaviour shows."""
    triggered_prompts = [trigger.apply(p) for p in prompts]
    answers = generate(
        model,
        tokenizer,
        triggered_prompts + prompts,
        Sampling(max_new_tokens=max_new_tokens),
        batch_size,
        desc="backdoor eval",
    )
    on, off = answers[: len(prompts)], answers[len(prompts) :]
    hits_on = [behavior.shows(a) for a in on]
    hits_off = [behavior.shows(a) for a in off]
    return {
        "triggered": wilson(sum(hits_on), len(on)).as_dict(),
        "clean": wilson(sum(hits_off), len(off)).as_dict(),
        "samples": [
            {"prompt": p, "triggered_answer": a, "clean_answer": b}
            for p, a, b in zip(prompts[:n_samples], on, off, strict=False)
        ],
    }
