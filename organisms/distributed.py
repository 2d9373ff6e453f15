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
    from accelerate.utils import parse_flag_from_env

    # `accelerate launch --cpu` says so only through this variable, which the Trainer reads too: without it,
    # CPU processes would each think they are alone (the only way to run several processes without a GPU).
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


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
