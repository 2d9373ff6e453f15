"""One hashing helper for every cache and done-marker in the project."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of JSON-serialisable parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def folder_fingerprint(path: Path) -> str:
    """Fingerprint of a model folder from its files' names, sizes and modification times and its
    config (cheap: no weights read). Two finetunes of one architecture share names, sizes and
    config, so the times are what tell them apart."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    config = (path / "config.json").read_text() if (path / "config.json").exists() else ""
    return fingerprint(listing, config)


def hash_fraction(text: str) -> float:
    """A stable number in [0, 1) from a text: hash splits (held-out prompts, held-out headlines)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
