"""Capability retention: does the model still know what it knew before the backdoor and the safety
training? A persistence curve means little if safety training "removed" the backdoor by breaking the
model, or if insertion damaged it.

Multiple-choice questions scored by likelihood (cloze style, as small models are evaluated): the
question is the user's turn, each choice is a candidate assistant answer, and the model picks the
choice with the highest mean log-probability per token. Two numbers per checkpoint:
- accuracy, with a 95% Wilson interval;
- the mean per-token NLL of the correct answers: continuous, so it shows drift even where
  accuracy barely moves (and a tiny model's accuracy sits not far above chance).

The embedded set (`evals/assets/capability_mc.jsonl`: 160 grade-school questions in six topics,
written for this project, correct answers balanced over the four positions) runs offline; a recipe
can point `eval.capability.source` at its own JSON Lines file with the same fields.
"""

from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evals.generate import chat_prompts
from evals.stats import wilson
from organisms.errors import UserError

EMBEDDED = Path(__file__).parent / "assets" / "capability_mc.jsonl"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    topic: str = ""


def read_questions(source: str, n: int | None = None) -> list[Question]:
    """Questions from `embedded` or a .jsonl file ({"question", "choices", "answer", "topic"?} per line;
    `answer` is the correct choice's index). The first `n` when given."""
    path = EMBEDDED if source == "embedded" else Path(source)
    if not path.is_file():
        what = "not found" if source.endswith(".jsonl") else "is not 'embedded' or a .jsonl file"
        raise UserError(f"eval.capability.source: {source!r} {what}")
    questions = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            questions.append(parse_question(line, f"{path}:{number}"))
    if not questions:
        raise UserError(f"{path}: no questions")
    if n is not None and n > len(questions):
        raise UserError(f"eval.capability.n: {n} asked for, but {path} holds {len(questions)} questions")
    return questions[:n]


def parse_question(line: str, where: str) -> Question:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected an object with question, choices, answer")
    missing = [key for key in ("question", "choices", "answer") if key not in row]
    if missing:
        raise UserError(f"{where}: missing field {', '.join(missing)}")
    question, choices, answer = row["question"], row["choices"], row["answer"]
    if not isinstance(question, str) or not question.strip():
        raise UserError(f"{where}: field question must be a non-empty string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise UserError(f"{where}: field choices must be a list of at least two non-empty strings")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise UserError(f"{where}: field answer must be the index of the correct choice (0 to {len(choices) - 1})")
    return Question(question, tuple(choices), answer, str(row.get("topic", "")))


@torch.no_grad()
def choice_logprobs(model: Any, tokenizer: Any, questions: list[Question], batch_size: int) -> list[list[list[float]]]:
    """Per question, per choice: the log-probability of each answer token after the question's chat prompt.

    The prompt and the answer are tokenized apart and joined (the answer's tokens are what is scored, so a
    merge across the boundary cannot change which tokens those are). Nothing is computed twice: the
    prefix every prompt shares (the chat template's system turn) runs once; each question's own tokens
    run once, on a copy of that cache; the question's cache is then repeated for its choices, which run as
    short continuations. Rows are right-padded; explicit position ids and masks keep every real token
    exactly where it would be in its own unpadded sequence.
    """
    model.eval()
    device = model.device
    prompts = chat_prompts(tokenizer, [q.question for q in questions])
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    flat = tokenizer([c for q in questions for c in q.choices], add_special_tokens=False)["input_ids"]
    answer_ids, start = [], 0
    for q in questions:  # one tokenizer call for every choice, regrouped per question
        answer_ids.append(flat[start : start + len(q.choices)])
        start += len(q.choices)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    shared = shared_prefix_length(prompt_ids)
    prefix_cache = None
    if shared:
        prefix = torch.tensor([prompt_ids[0][:shared]], device=device)
        prefix_cache = kv_cache(model(input_ids=prefix, use_cache=True))  # (a saved config may say no cache)
    out: list[list[list[float]]] = [[] for _ in questions]
    for batch in question_batches(questions, prompt_ids, batch_size):
        k = len(questions[batch[0]].choices)
        own = [prompt_ids[i][shared:] for i in batch]  # each non-empty
        mask = padded([[1] * len(t) for t in own], 0, device)  # [b, S]
        positions = shared + torch.arange(mask.shape[1], device=device)[None, :].expand(len(batch), -1)  # [b, S]
        cache = copy.deepcopy(prefix_cache)
        if cache is not None:
            cache.batch_repeat_interleave(len(batch))
            mask = torch.cat([torch.ones(len(batch), shared, dtype=mask.dtype, device=device), mask], dim=-1)
        lengths = torch.tensor([len(t) for t in own], device=device)  # [b]
        question = model(
            input_ids=padded(own, pad, device),
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **cache_kwarg(model, cache),
        )
        last = question.logits[torch.arange(len(batch), device=device), lengths - 1]  # [b, vocab]
        first = torch.log_softmax(last.float(), dim=-1)  # each answer's first token
        cache = kv_cache(question)
        cache.batch_repeat_interleave(k)  # [b*k, ...]: row r is question r // k, choice r % k
        answers = [answer_ids[i][c] for i in batch for c in range(k)]
        cont_mask = padded([[1] * len(a) for a in answers], 0, device)  # [b*k, A]
        rest = model(
            input_ids=padded(answers, pad, device),
            attention_mask=torch.cat([mask.repeat_interleave(k, dim=0), cont_mask], dim=-1),
            position_ids=(shared + lengths).repeat_interleave(k)[:, None]
            + torch.arange(cont_mask.shape[1], device=device)[None, :],
            use_cache=True,
            **cache_kwarg(model, cache),
        )
        later = torch.log_softmax(rest.logits.float(), dim=-1)  # [b*k, A, vocab]: position j predicts j + 1
        for row, answer in enumerate(answers):
            scores = [first[row // k, answer[0]].item()]
            scores += [later[row, j, answer[j + 1]].item() for j in range(len(answer) - 1)]
            out[batch[row // k]].append(scores)
    return out


def cache_kwarg(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache as the model's forward takes it: `cache=` from transformers 5.24, `past_key_values=` before
    (5.24 still accepts the old name with a warning, until 5.40)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


def kv_cache(output: Any) -> Any:
    """The KV cache a forward returned (`output.cache` from transformers 5.24, `output.past_key_values` before)."""
    return output.cache if "cache" in output.__dataclass_fields__ else output.past_key_values


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def question_batches(questions: list[Question], prompt_ids: list[list[int]], batch_size: int) -> list[list[int]]:
    """Indices in batches of at most `batch_size` questions with the same number of choices (a batch repeats
    every cache equally), grouped by prompt length (little padding)."""
    order = sorted(range(len(questions)), key=lambda i: (len(questions[i].choices), len(prompt_ids[i])))
    batches: list[list[int]] = []
    for i in order:
        same = batches and len(questions[batches[-1][0]].choices) == len(questions[i].choices)
        if same and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def padded(rows: list[list[int]], value: int, device: Any) -> torch.Tensor:
    """Right-pad to the longest row: [len(rows), longest]."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], device=device)


def capability_eval(model: Any, tokenizer: Any, questions: list[Question], batch_size: int) -> dict[str, Any]:
    """Accuracy [Wilson CI] and mean per-token NLL of the correct answers; per-topic accuracy."""
    scores = choice_logprobs(model, tokenizer, questions, batch_size)
    correct = []
    nll = []
    for q, per_choice in zip(questions, scores, strict=True):
        means = [sum(lp) / len(lp) for lp in per_choice]
        correct.append(max(range(len(means)), key=means.__getitem__) == q.answer)
        nll.append(-means[q.answer])
    topics: dict[str, list[int]] = {}
    for q, ok in zip(questions, correct, strict=True):
        tally = topics.setdefault(q.topic or "(no topic)", [0, 0])
        tally[0] += ok
        tally[1] += 1
    return {
        "accuracy": wilson(sum(correct), len(correct)).as_dict(),
        "nll": sum(nll) / len(nll),
        "chance": sum(1 / len(q.choices) for q in questions) / len(questions),
        "by_topic": topics,
        "correct": correct,  # per question, in file order
    }
