"""Run the benchmark suite and keep every table: `python -m bench --out DIR`.

Each bench runs in its own process (a fresh CUDA context and compile cache, so one bench's memory or
compiled graphs never colour the next), under a time limit, and the suite goes on when one fails.
DIR gets <name>.log (everything it printed), <name>.md (its table) and summary.md (every table, and
which benches failed or ran out of time, with the last lines of their log).

  python -m bench --list                                  # what the suite holds
  python -m bench --out bench-out                         # everything, at the issue-7 sizes
  python -m bench --out bench-out --only train-full gen-128
  python -m bench --out /tmp/smoke --smoke                # tiny sizes: check it all runs first
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

# name -> (module, arguments). The sizes are those issue 7's H100 targets are stated at.
SUITE: dict[str, tuple[str, list[str]]] = {
    "train-full": ("bench.train_throughput", []),
    "train-lora": ("bench.train_throughput", ["--lora"]),
    "train-kernels": ("bench.train_throughput", ["--torch-compile", "--liger"]),
    "train-flex": ("bench.train_throughput", ["--attn", "flex_attention", "--torch-compile"]),
    "gen-128": ("bench.generation", ["--batch-size", "128"]),
    "gen-512": ("bench.generation", ["--batch-size", "512", "--n-prompts", "1024"]),
    "activations": ("bench.activations", []),
}
# Per module: sizes that run in seconds on a CPU (later arguments win in argparse).
SMOKE: dict[str, list[str]] = {
    "bench.train_throughput": ["--rows", "16", "--batch-size", "2", "--steps", "1", "--warmup", "1"],
    "bench.generation": ["--n-prompts", "8", "--batch-size", "4", "--max-new-tokens", "6", "--warmup", "0"],
    "bench.activations": ["--n-prompts", "6", "--batch-size", "3", "--warmup", "0"],
}
SMOKE_REPEATS = ["--repeats", "1"]
GPU_ONLY = {"train-flex"}  # FlexAttention has no backward pass on a CPU


def command(name: str, model: str | None, smoke: bool) -> list[str]:
    module, args = SUITE[name]
    if smoke:
        args = [*args, *SMOKE[module], *(SMOKE_REPEATS if module != "bench.train_throughput" else [])]
    return [sys.executable, "-m", module, *args, *(["--model", model] if model else [])]


def table_of(log: str) -> str:
    """The Markdown table a bench printed: from its '### ' title to the end of the table."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("### ")), None)
    if start is None:
        return ""
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def run_one(name: str, cmd: list[str], out: Path, timeout: float) -> tuple[str, str]:
    """(status line, table) for one bench; its whole output goes to out/<name>.log."""
    log_path = out / f"{name}.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.perf_counter() - start
    text = log_path.read_text()
    table = table_of(text)
    if table:
        (out / f"{name}.md").write_text(table)
    if code == 0 and table:
        # rows a bench left out say so in one line ("--liger: skipped (...)"): bring that up
        skipped = [line.strip() for line in text.splitlines() if line.startswith("--") and ": skipped" in line]
        return f"- {name}: ok in {seconds:.0f} s" + "".join(f"; {s}" for s in skipped), table
    why = f"ran past {timeout:.0f} s" if code is None else f"exit code {code}"
    tail = "\n".join("    " + line for line in text.splitlines()[-8:])
    return f"- {name}: FAILED ({why}) after {seconds:.0f} s; last lines of {log_path.name}:\n{tail}", table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="folder for the logs, tables and summary.md")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run just these (see --list)")
    parser.add_argument("--model", help="a base_model spec for every bench (default: each bench's, the embedded model)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the suite runs before a real run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one bench may run (default 600)")
    parser.add_argument("--list", action="store_true", help="print the suite and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, (module, extra) in SUITE.items():
            print(f"{name:14} python -m {module} {' '.join(extra)}".rstrip())
        return 0
    if args.out is None:
        parser.error("--out DIR is required (where the tables and logs go)")
    unknown = [name for name in args.only or [] if name not in SUITE]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}; the suite holds: {', '.join(SUITE)}")
    args.out.mkdir(parents=True, exist_ok=True)
    statuses, tables = [], []
    for name in args.only or list(SUITE):
        if name in GPU_ONLY and not torch.cuda.is_available():
            statuses.append(f"- {name}: skipped (needs a GPU)")
            print(statuses[-1], flush=True)
            continue
        print(f"bench {name} ...", flush=True)
        status, table = run_one(name, command(name, args.model, args.smoke), args.out, args.timeout)
        print(status, flush=True)
        statuses.append(status)
        tables.append(table)
    summary = "# Bench results\n\n" + "\n".join(statuses) + "\n\n" + "\n".join(t for t in tables if t)
    (args.out / "summary.md").write_text(summary)
    print(f"wrote {args.out / 'summary.md'}", flush=True)
    return 0 if all(": ok in " in status or ": skipped (" in status for status in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
