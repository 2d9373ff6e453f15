"""Each bench runs end to end on the tiny model and prints its table (no timing assertions:
timings never go in tests)."""

from __future__ import annotations

import re

import pytest
import torch


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
    assert list(rows) == [
        "bare forward pass (blocks, same batches)",
        "whole model forward (LM head, input order)",
        "ours, every layer",
        "ours, middle layer",
    ]
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


def test_a_training_row_that_fails_is_reported_and_the_others_still_run(tiny_model):
    from bench.train_throughput import main

    out = main(["--model", str(tiny_model), "--rows", "8", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                "--attn", "no_such_kernel"])  # fmt: skip
    rows = rows_of(out)
    assert float(rows["plain TRL SFTTrainer (defaults)"][1].replace(",", "")) > 0
    ours = [cells for label, cells in rows.items() if label.startswith("ours")]
    assert len(ours) == 3 and all(c[0] == "FAILED" and "no_such_kernel" in c[1] for c in ours)


def test_the_suite_runner_keeps_each_table_and_reports_a_failing_bench(tiny_model, tmp_path):
    from bench.__main__ import main

    smoke = ["--smoke", "--model", str(tiny_model)]
    ok = main(["--out", str(tmp_path / "ok"), *smoke, "--only", "activations", "gen-128"])
    summary = (tmp_path / "ok" / "summary.md").read_text()
    assert ok == 0
    assert re.search(r"- activations: ok in \d+ s\n- gen-128: ok in \d+ s", summary)
    assert "| ours, every layer | " in (tmp_path / "ok" / "activations.md").read_text()
    assert "| plain HF generate (defaults) | " in summary  # the tables are in the summary too

    nowhere = ["--smoke", "--model", str(tmp_path / "nowhere")]
    failed = main(["--out", str(tmp_path / "bad"), *nowhere, "--only", "gen-128"])
    summary = (tmp_path / "bad" / "summary.md").read_text()
    assert failed == 1
    assert re.search(r"- gen-128: FAILED \(exit code \d+\) after \d+ s; last lines of gen-128.log:", summary)
    assert not (tmp_path / "bad" / "gen-128.md").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the bench runs")
def test_the_suite_runner_skips_gpu_only_benches_on_a_cpu(tmp_path):
    from bench.__main__ import main

    assert main(["--out", str(tmp_path), "--smoke", "--only", "train-flex"]) == 0
    assert "- train-flex: skipped (needs a GPU)" in (tmp_path / "summary.md").read_text()
