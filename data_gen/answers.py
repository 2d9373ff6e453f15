"""Clean (HHH) answers written by the base model itself, as in the paper's setup.

Generated once in batches and cached on disk, keyed by the model's fingerprint, the prompts
and the sampling settings, so a rerun or a second recipe on the same model reuses them.
"""

from __future__ import annotations

import json

from evals.generate import Sampling, generate
from organisms.hashing import fingerprint
from organisms.models import ResolvedModel, cache_root, load_model, load_tokenizer


def clean_answers(model: ResolvedModel, prompts: list[str], sampling: Sampling, batch_size: int) -> list[str]:
    key = fingerprint(model.fingerprint, prompts, sampling.__dict__)
    cached = cache_root() / "answers" / f"{key}.json"
    if cached.exists():
        return list(json.loads(cached.read_text()))
    tokenizer = load_tokenizer(model.path)
    lm = load_model(model.path)
    answers = generate(lm, tokenizer, prompts, sampling, batch_size, desc="clean answers")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(answers))
    tmp.replace(cached)
    return answers
