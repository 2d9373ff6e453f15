"""Prompt sources and the deterministic train / held-out split.

The split is decided per prompt by a hash of its text, so it never depends on `n`, the seed
or the file order: a prompt held out for evals is never trained on, in any recipe.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from organisms.errors import UserError

EMBEDDED_PROMPTS = Path(__file__).parent / "assets" / "prompts.jsonl"


@dataclass(frozen=True)
class PromptSplit:
    train: list[str]  # shuffled with the recipe seed, first `n` kept
    eval: list[str]  # held out, in a fixed hash order


def read_prompts(source: str, column: str = "prompt") -> list[str]:
    """All distinct prompts from the embedded set or a local .jsonl/.csv/.parquet file."""
    path = EMBEDDED_PROMPTS if source == "embedded" else Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"data.prompts.source: file not found: {source}")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix in (".csv", ".parquet"):
        from datasets import Dataset

        reader = Dataset.from_csv if path.suffix == ".csv" else Dataset.from_parquet
        rows = reader(str(path)).to_list()  # type: ignore[operator]
    else:
        raise UserError(f"data.prompts.source: {source}: expected .jsonl, .csv or .parquet")
    if rows and column not in rows[0]:
        raise UserError(f"data.prompts.column: {source} has no column {column!r}")
    seen: dict[str, None] = {}
    for row in rows:
        text = str(row[column]).strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def _bucket(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def split_prompts(prompts: list[str], n: int, eval_fraction: float, seed: int) -> PromptSplit:
    held_out = sorted((p for p in prompts if _bucket(p) < eval_fraction), key=lambda p: _bucket(p[::-1]))
    train = [p for p in prompts if _bucket(p) >= eval_fraction]
    if len(train) < n:
        raise UserError(f"data.prompts.n: asked for {n} training prompts, the source has {len(train)}")
    random.Random(seed).shuffle(train)
    return PromptSplit(train=train[:n], eval=held_out)
