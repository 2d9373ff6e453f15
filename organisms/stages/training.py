"""The part every training stage shares: build a TRL trainer, train (resuming), save final/.

By default a LoRA adapter is merged into the weights at the end of a stage: final/ holds full
weights, so the next stage (LoRA or full) starts from the model exactly as a lab would receive
it, not from the base model plus a detachable adapter. With `merge_adapter: false`, final/
holds the adapter and the next stage keeps training that same adapter.

Speed defaults (a recipe's `trainer:` overrides any of them): no gradient checkpointing (~30%
slower, and a 135M model never needs the memory); on a GPU bf16 autocast over fp32 master
weights and the fused AdamW kernel (the same update, one kernel launch instead of one per
tensor). `torch_compile: true` and `use_liger_kernel: true` (Liger's layer kernels, RMSNorm and the like;
`pip install liger-kernel`, GPU only; TRL 1.16 computes every SFT loss through its own chunked LM head, so
the [tokens × vocab] logits are never materialised with or without it) are left to recipes: neither has
been measured to pay here yet (bench/train_throughput.py --torch-compile --liger).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from organisms.distributed import print_main
from organisms.errors import UserError
from organisms.layout import checkpoints
from organisms.recipe import StageSpec
from organisms.stages.context import MetricsLogger, StageContext, StageResult

# Our defaults for every kind; the stage's own defaults and then the recipe's `trainer:` win.
COMMON_DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "save_strategy": "steps",
    "report_to": "none",
    "disable_tqdm": False,
}
GPU_DEFAULTS: dict[str, Any] = {"bf16": True, "optim": "adamw_torch_fused"}


def trainer_settings(stage: StageSpec, seed: int, defaults: dict[str, Any], announce: bool = True) -> dict[str, Any]:
    """The config-class kwargs for a stage: ours, then the kind's, then the recipe's. `announce`: say what a CPU
    changes (off for the up-front check, which the stage repeats)."""
    import torch

    say = print_main if announce else lambda message: None
    gpu = torch.cuda.is_available()
    # TRL turns bf16 on by default, which a CPU cannot run: default it to "GPU present".
    settings = {"seed": seed, "bf16": False, **(GPU_DEFAULTS if gpu else {}), **COMMON_DEFAULTS}
    settings = {**settings, **defaults, **stage.trainer}
    if settings.get("bf16") and not gpu:
        # GPU recipes ask for bf16; let them run (slowly, in fp32) on a CPU for smoke tests.
        say(f"stage {stage.name}: bf16 requested but no GPU here: training in fp32")
        settings["bf16"] = False
    if settings.get("optim") == "adamw_torch_fused" and not gpu:
        settings["optim"] = "adamw_torch"  # the fused kernel is a GPU kernel
    if settings.get("use_liger_kernel") and not gpu:
        say(f"stage {stage.name}: use_liger_kernel needs a GPU (Triton kernels): training without it")
        settings["use_liger_kernel"] = False
    return settings


def check_kernels_installed(stages: list[StageSpec], where: str) -> None:
    """Fail before any work (not when stage 3 starts) if a stage asks for a kernel package that is
    missing on this GPU machine."""
    import torch

    for i, stage in enumerate(stages):
        wants_liger = stage.trainer.get("use_liger_kernel") and torch.cuda.is_available()
        if wants_liger and importlib.util.find_spec("liger_kernel") is None:
            raise UserError(
                f"{where}: stages.{i}.trainer.use_liger_kernel is true but liger-kernel is not installed "
                "(pip install liger-kernel, or drop the field)"
            )


def varlen_attention_available() -> bool:
    """Whether flash-attention's varlen kernel can run here (a GPU with the flash_attn package)."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def pick_attention(model: Any, settings: dict[str, Any]) -> None:
    """Padding-free / packed batches are one long row whose documents must not see each other.
    transformers' sdpa and eager build that block-diagonal mask from position_ids (correct, tested,
    but dense); flash-attention's varlen kernel does it without the quadratic mask: use it when we can."""
    import torch

    if not (settings.get("padding_free") or settings.get("packing")):
        return
    if varlen_attention_available():
        model.set_attn_implementation("flash_attention_2")
    elif torch.cuda.is_available():
        print_main(
            "padding-free / packed batches without flash-attn: attention runs densely over each whole batch "
            "(a [tokens × tokens] mask per layer), which is slower than padded batches; pip install flash-attn"
        )


def build_trainer(
    stage: StageSpec,
    ctx: StageContext,
    trainer_cls: type,
    dataset: Any,
    defaults: dict[str, Any],
    callbacks: list[Any] | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """The TRL trainer a stage trains with (also what bench/train_throughput.py times)."""
    from peft import LoraConfig

    from organisms.models import load_model, load_tokenizer
    from organisms.recipe import trainer_config_class

    tokenizer = load_tokenizer(ctx.tokenizer_path)
    model = load_model(ctx.init_path, for_training=True)
    if hasattr(model, "merge_and_unload") and not continues_adapter(stage, ctx):
        # an adapter as the start (the pipeline starts from merged_weights, so only a direct caller such as
        # bench/ gets here): its merged weights are the start; only the stage after a `merge_adapter: false`
        # stage trains an adapter further
        model = model.merge_and_unload()
        model.requires_grad_(True)
    settings = trainer_settings(stage, ctx.seed, defaults)
    pick_attention(model, settings)
    args = trainer_config_class(stage.kind)(output_dir=str(ctx.stage_dir), **settings)
    peft_config = LoraConfig(task_type="CAUSAL_LM", **stage.peft) if stage.peft else None
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsLogger(ctx.stage_dir / "metrics.jsonl"), *(callbacks or [])],
        **trainer_kwargs,
    )


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop the log rows of steps after `after_step` (a resumed run logs them again), and a last row torn by the
    kill."""
    if path.exists():
        steps = [(line, logged_step(line)) for line in path.read_text().split("\n")]
        path.write_text("".join(f"{line}\n" for line, step in steps if step is not None and step <= after_step))


def logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def continues_adapter(stage: StageSpec, ctx: StageContext) -> bool:
    """Whether this stage keeps training the LoRA adapter of the stage before it (`merge_adapter: false`)."""
    stages = ctx.recipe.stages if ctx.recipe is not None else []
    index = next((i for i, s in enumerate(stages) if s.name == stage.name), 0)
    return index > 0 and not stages[index - 1].merge_adapter


def train_and_save(
    stage: StageSpec,
    ctx: StageContext,
    trainer_cls: type,
    dataset: Any,
    defaults: dict[str, Any],
    **trainer_kwargs: Any,
) -> StageResult:
    trainer = build_trainer(stage, ctx, trainer_cls, dataset, defaults, **trainer_kwargs)
    refuse_sharded_adapters(stage, trainer)
    found = checkpoints(ctx.stage_dir)
    resume = str(found[-1][1]) if found else None
    if resume:
        # The Trainer only resumes when told to; without this it silently starts over.
        print_main(f"stage {stage.name}: resuming from {resume}")
    if trainer.is_world_process_zero():
        # the steps after the checkpoint (all of them, for a stage killed before its first) are logged again
        truncate_metrics(ctx.stage_dir / "metrics.jsonl", after_step=found[-1][0] if found else 0)
    trainer.train(resume_from_checkpoint=resume)

    final = ctx.stage_dir / "final"
    trained: Any = trainer.model
    if not hasattr(trained, "merge_and_unload"):
        # every rank calls it: under FSDP (FULL_STATE_DICT) or ZeRO-3 the weights are gathered collectively
        trainer.save_model(str(final))
        if trainer.is_world_process_zero():
            (final / "training_args.bin").unlink(missing_ok=True)  # a pickle: final/ holds safetensors only
    else:
        if stage.merge_adapter:
            trained = trained.merge_and_unload()
        if trainer.is_world_process_zero():
            trained.save_pretrained(final)
            trainer.processing_class.save_pretrained(final)
    return StageResult(final_path=final, steps=trainer.state.global_step)


def refuse_sharded_adapters(stage: StageSpec, trainer: Any) -> None:
    """A LoRA stage merges (or saves) its adapter from the main process alone, which cannot gather weights that
    FSDP or ZeRO-3 shard across processes. LoRA trains a model that fits one GPU anyway: data parallel it is."""
    zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    if stage.peft and (trainer.is_fsdp_enabled or zero3):
        raise UserError(
            f"stage {stage.name}: LoRA under {'FSDP' if trainer.is_fsdp_enabled else 'DeepSpeed ZeRO-3'} is not "
            "supported (the adapter is merged on one process); launch LoRA stages with accelerate/ddp.yaml"
        )
