"""What every text-generation backend shares: settings, the interface, the response cache."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from evals.generate import Sampling
from organisms.hashing import fingerprint

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}
Conversation = list[Message]
OnResult = Callable[[int, str], None]


# One decoding-settings class for evals and every backend (max_new_tokens, temperature, top_p,
# repetition_penalty, seed, stop); temperature 0 means greedy.
GenParams = Sampling


class Backend(Protocol):
    """Answers chat conversations. `identity` names backend + model for cache keys."""

    @property
    def identity(self) -> str: ...

    def chat(
        self, conversations: list[Conversation], params: GenParams, on_result: OnResult | None = None
    ) -> list[str]:
        """Answers in input order. `on_result(i, text)` is called as each answer arrives, so a
        caller can persist it before the whole batch is done."""
        ...


class ResponseCache:
    """Every response on disk, keyed by backend identity, messages and parameters.

    An append-only JSON-lines file: a build killed half-way resumes without regenerating what
    it already has (and a torn last line from a kill is skipped). Thread-safe for writers.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, str] = {}
        if path.exists():
            # Split on newlines only: splitlines() also breaks at U+2028 or U+0085, which json.dumps leaves raw
            # in a text. A kill can tear a line inside a multi-byte character: that line is skipped, the rest loads.
            for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
                record = _record(line)
                if record is not None:
                    self._data[record["key"]] = record["text"]

    @staticmethod
    def key(identity: str, conversation: Conversation, params: GenParams) -> str:
        return fingerprint(identity, conversation, asdict(params), length=32)

    def get(self, key: str) -> str | None:
        return self._data.get(key)

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self._data[key] = text
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _append_line(self.path, json.dumps({"key": key, "text": text}, ensure_ascii=False))

    def __len__(self) -> int:
        return len(self._data)


def _record(line: str) -> dict[str, str] | None:
    """A cache line's record; None for a torn line. A file written before records started on a fresh line
    can hold a record glued onto a torn one: a record's opening never occurs inside a record's JSON (its
    quotes would be escaped there), so the last opening on the line starts that record."""
    candidates = [line]
    glued = line.rfind(_RECORD_START)
    if glued > 0:
        candidates.append(line[glued:])
    for candidate in candidates:
        try:
            record = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str) and isinstance(record.get("text"), str):
            return record
    return None


_RECORD_START = '{"key": '  # how json.dumps opens every record


def _append_line(path: Path, line: str) -> None:
    """Append a line, on a line of its own: after a kill the file can end in a torn line with no newline,
    and a record appended onto it would be lost with it on the next load."""
    with path.open("a+b") as f:  # writes go to the end whatever the read position
        if f.seek(0, os.SEEK_END):
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write((line + "\n").encode())


def response_cache(backend: Backend) -> ResponseCache:
    """The one response cache of a backend (model + server), under the project cache."""
    from organisms.models import cache_root

    return ResponseCache(cache_root() / "responses" / f"{fingerprint(backend.identity)}.jsonl")


def cached_chat(
    backend: Backend, cache: ResponseCache, conversations: list[Conversation], params: GenParams
) -> list[str]:
    """Answer conversations, asking the backend only for the ones not already cached."""
    keys = [ResponseCache.key(backend.identity, c, params) for c in conversations]
    missing = [i for i, k in enumerate(keys) if cache.get(k) is None]
    if missing:
        answers = backend.chat(
            [conversations[i] for i in missing], params, on_result=lambda j, text: cache.put(keys[missing[j]], text)
        )
        for i, text in zip(missing, answers, strict=True):
            if cache.get(keys[i]) is None:  # a backend that reports only at the end
                cache.put(keys[i], text)
    return [str(cache.get(k)) for k in keys]
