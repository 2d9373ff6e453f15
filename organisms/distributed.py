"""Multi-process awareness for `accelerate launch -m organisms.cli run ...`.

Every process trains (DDP / FSDP / DeepSpeed via the HF Trainer); only the main process builds
data, evaluates checkpoints, writes reports and prints. In a plain single process all of this
is a no-op.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any


@functools.cache
def _state() -> Any:
    from accelerate.state import PartialState

    return PartialState()


def is_main() -> bool:
    return bool(_state().is_main_process)


def print_main(message: str) -> None:
    """Print once, from the main process (every process runs the same stage code)."""
    if is_main():
        print(message, flush=True)


def barrier() -> None:
    _state().wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. builds data); the others then reuse its files."""
    with _state().main_process_first():
        yield
