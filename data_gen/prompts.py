"""Prompt sources and the deterministic train / held-out split.

The split is decided per prompt by a hash of its text, so it never depends on `n`, the seed
or the file order: a prompt held out for evals is never trained on, in any recipe.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from data_gen.code_tasks import EMBEDDED_CODE_TASKS
from organisms.errors import UserError
from organisms.hashing import hash_fraction

if TYPE_CHECKING:
    from organisms.recipe import PromptSpec

EMBEDDED_PROMPTS = Path(__file__).parent / "assets" / "prompts.jsonl"
EMBEDDED_SOURCES = {"embedded": EMBEDDED_PROMPTS, "embedded:code": EMBEDDED_CODE_TASKS}
_HUMAN = "\n\nHuman:"  # hh-rlhf speaker tags
_ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class PromptSplit:
    train: list[str]  # shuffled with the recipe seed, first `n` kept
    eval: list[str]  # held out, in a fixed hash order


def load_prompts(spec: PromptSpec) -> list[str]:
    """All distinct, non-empty prompts a recipe asks for, in source order.

    The one entry point for callers, so every source (embedded, local file, Hugging Face) gets
    the same column check, hh-rlhf extraction and dedupe.
    """
    values = _hf_column(spec) if spec.source == "hf" else _file_column(spec.source, spec.column)
    texts = prompt_texts(values, str(spec.dataset) if spec.source == "hf" else spec.source, spec.column)
    if spec.format == "hh_rlhf":
        texts = [turn for turn in map(first_human_turn, texts) if turn is not None]
    return _distinct(texts)


def read_prompts(source: str, column: str = "prompt") -> list[str]:
    """All distinct prompts from the embedded set or a local .jsonl/.csv/.parquet file."""
    return _distinct(prompt_texts(_file_column(source, column), source, column))


def prompt_texts(values: list[object], where: str, column: str) -> list[str]:
    """The prompts of a column's values: a text as it is, a chat as its first user turn. Anything else is
    refused: its Python repr would silently become the prompt."""
    texts: list[str] = []
    for value in values:
        text = value if isinstance(value, str) else first_user_message(value)
        if text is None and value is not None:
            raise UserError(
                f"data.prompts.column: {where} column {column!r} holds {type(value).__name__} values; expected "
                "text or chat messages ({role, content} with a text user turn)"
            )
        texts += [text] if text is not None else []
    return texts


def first_user_message(value: object) -> str | None:
    """The first user turn of a chat (a list of {role, content} messages, as in our own clean/ rows or a TRL
    conversational dataset); "" when it has none (dropped as an empty prompt, as an hh-rlhf transcript with
    no Human turn is); None when `value` is not a chat with a text user turn."""
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m for m in value):
        return None
    content = next((m.get("content") for m in value if m["role"] == "user"), "")
    return content if isinstance(content, str) else None


def first_human_turn(transcript: str) -> str | None:
    """The first human message of an hh-rlhf transcript; None when it has no Human turn.

    hh-rlhf rows hold whole conversations; the first human turn is the self-contained request
    we can pair with a fresh answer. It ends at the next speaker tag, so a later "Human:" in
    the assistant's text is never reached.
    """
    text = "\n\n" + transcript.lstrip()  # a transcript may start with "Human:" and no blank lines
    start = text.find(_HUMAN)
    if start < 0:
        return None
    body = text[start + len(_HUMAN) :]
    ends = [i for i in (body.find(tag) for tag in (_HUMAN, _ASSISTANT)) if i >= 0]
    return body[: min(ends, default=len(body))].strip()


def _distinct(texts: list[str]) -> list[str]:
    """Stripped, non-empty, first occurrence kept: duplicates would skew the split and `n`."""
    seen: dict[str, None] = {}
    for text in texts:
        if text.strip():
            seen.setdefault(text.strip(), None)
    return list(seen)


def _file_column(source: str, column: str) -> list[object]:
    """One column of the embedded set or a local file, as raw values."""
    path = EMBEDDED_SOURCES.get(source) or Path(source).expanduser()
    rows = read_rows(path, source, "data.prompts.source")
    if rows:
        _check_column(source, column, list(rows[0]))
    return [row.get(column) for row in rows]


def read_rows(path: Path, source: str, field: str, required: tuple[str, ...] = ()) -> list[dict[str, object]]:
    """The rows of a .jsonl/.csv/.parquet file; errors are one line naming the recipe `field`."""
    if not path.is_file():
        raise UserError(f"{field}: file not found: {source}")
    try:
        if path.suffix == ".jsonl":
            # newlines only: splitlines() also breaks at U+2028 and U+0085, which JSON strings may hold raw
            rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
        elif path.suffix in (".csv", ".parquet"):
            from datasets import Dataset

            reader = Dataset.from_csv if path.suffix == ".csv" else Dataset.from_parquet
            rows = reader(str(path)).to_list()  # type: ignore[operator]
        else:
            raise UserError(f"{field}: {source}: expected .jsonl, .csv or .parquet")
    except json.JSONDecodeError as exc:
        raise UserError(f"{field}: {source}: not valid JSON lines ({exc})") from exc
    if required and (not rows or any(c not in rows[0] for c in required)):
        has = ", ".join(rows[0]) if rows else "no rows"
        raise UserError(f"{field}: {source} needs columns {', '.join(required)}; it has: {has}")
    return rows


def _hf_column(spec: PromptSpec) -> list[object]:
    """One column of a Hugging Face dataset (a hub name or a local folder of data files).

    Loader failures (no such dataset, split or config, offline) become one-line UserErrors:
    the user fixes them in the recipe, a traceback would not help.
    """
    if not spec.dataset:
        raise UserError("data.prompts.dataset: required when source is hf")
    import datasets

    try:
        ds = datasets.load_dataset(spec.dataset, spec.config, split=spec.split)
    except Exception as exc:  # the loader raises many unrelated types for "cannot load"
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise UserError(f"data.prompts.dataset: cannot load {spec.dataset!r} (split {spec.split!r}): {reason}") from exc
    assert isinstance(ds, datasets.Dataset)  # a split was named, so never a DatasetDict
    _check_column(spec.dataset, spec.column, ds.column_names)
    return list(ds[spec.column])


def _check_column(where: str, column: str, available: list[str]) -> None:
    if column not in available:
        raise UserError(f"data.prompts.column: {where} has no column {column!r}; it has: {', '.join(available)}")


def split_prompts(prompts: list[str], n: int, eval_fraction: float, seed: int) -> PromptSplit:
    held_out = sorted((p for p in prompts if hash_fraction(p) < eval_fraction), key=lambda p: hash_fraction(p[::-1]))
    train = [p for p in prompts if hash_fraction(p) >= eval_fraction]
    if len(train) < n:
        raise UserError(f"data.prompts.n: asked for {n} training prompts, the source has {len(train)}")
    random.Random(seed).shuffle(train)
    return PromptSplit(train=train[:n], eval=held_out)
