"""Each bench runs end to end on the tiny model and prints its table (no timing assertions:
timings never go in tests)."""

from __future__ import annotations

import re


def rows_of(table: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for each body row of a Markdown table."""
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in body)}


def test_generation_bench_compares_ours_with_plain_generate_and_checks_outputs(tiny_model):
    from bench.generation import main

    out = main(["--model", str(tiny_model), "--n-prompts", "8", "--batch-size", "4", "--max-new-tokens", "6",
                "--warmup", "0", "--repeats", "1"])  # fmt: skip
    rows = rows_of(out)
    assert list(rows) == ["plain HF generate (defaults)", "ours", "ours + verdict stop (per condition)"]
    assert rows["ours"][-1] == "8/8 identical"
    assert re.match(r"8/8 same verdict, 8/8 prefix-equal", rows["ours + verdict stop (per condition)"][-1])


def test_activations_bench_compares_ours_with_a_bare_forward(tiny_model):
    from bench.activations import main

    out = main(["--model", str(tiny_model), "--n-prompts", "6", "--batch-size", "3", "--warmup", "0", "--repeats", "1"])
    rows = rows_of(out)
    assert list(rows) == ["bare forward pass", "ours, every layer", "ours, middle layer"]
    assert rows["ours, every layer"][-1] == "2 × [6×64]"


def test_training_bench_times_plain_trl_and_our_stage(tiny_model):
    from bench.train_throughput import main

    out = main(["--model", str(tiny_model), "--rows", "16", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                "--lora"])  # fmt: skip
    rows = rows_of(out)
    assert list(rows) == [
        "plain TRL SFTTrainer (defaults)",
        "ours (defaults)",
        "ours (padding-free)",
        "ours (packed, 512 tokens/row)",
    ]
    assert all(float(r[1].replace(",", "")) > 0 for r in rows.values())  # a real tokens/s was measured
