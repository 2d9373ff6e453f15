"""The part every training stage shares: build a TRL trainer, train (resuming), save final/.

By default a LoRA adapter is merged into the weights at the end of a stage: final/ holds full
weights, so the next stage (LoRA or full) starts from the model exactly as a lab would receive
it, not from the base model plus a detachable adapter. With `merge_adapter: false`, final/
holds the adapter and the next stage keeps training that same adapter.
"""

from __future__ import annotations

from typing import Any

from organisms.layout import checkpoints
from organisms.recipe import StageSpec
from organisms.stages.context import MetricsLogger, StageContext, StageResult

# Our defaults for every kind; the stage's own defaults and then the recipe's `trainer:` win.
# Gradient checkpointing costs ~30% speed and a 135M model never needs the memory.
COMMON_DEFAULTS: dict[str, Any] = {
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "save_strategy": "steps",
    "report_to": "none",
    "disable_tqdm": False,
}


def train_and_save(
    stage: StageSpec,
    ctx: StageContext,
    trainer_cls: type,
    dataset: Any,
    defaults: dict[str, Any],
    **trainer_kwargs: Any,
) -> StageResult:
    import torch
    from peft import LoraConfig

    from organisms.models import load_model, load_tokenizer
    from organisms.recipe import trainer_config_class

    tokenizer = load_tokenizer(ctx.tokenizer_path)
    model = load_model(ctx.init_path, for_training=True)
    # TRL turns bf16 on by default, which a CPU cannot run: default it to "GPU present".
    settings = {"seed": ctx.seed, "bf16": torch.cuda.is_available(), **COMMON_DEFAULTS, **defaults, **stage.trainer}
    if settings.get("bf16") and not torch.cuda.is_available():
        # GPU recipes ask for bf16; let them run (slowly, in fp32) on a CPU for smoke tests.
        print(f"stage {stage.name}: bf16 requested but no GPU here: training in fp32", flush=True)
        settings["bf16"] = False
    args = trainer_config_class(stage.kind)(output_dir=str(ctx.stage_dir), **settings)
    peft_config = LoraConfig(task_type="CAUSAL_LM", **stage.peft) if stage.peft else None
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsLogger(ctx.stage_dir / "metrics.jsonl")],
        **trainer_kwargs,
    )
    found = checkpoints(ctx.stage_dir)
    resume = str(found[-1][1]) if found else None
    if resume:
        # The Trainer only resumes when told to; without this it silently starts over.
        print(f"stage {stage.name}: resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)

    final = ctx.stage_dir / "final"
    trained: Any = trainer.model
    if hasattr(trained, "merge_and_unload") and stage.merge_adapter:
        trained = trained.merge_and_unload()
    if trainer.is_world_process_zero():
        trained.save_pretrained(final)
        tokenizer.save_pretrained(final)
    return StageResult(final_path=final, steps=trainer.state.global_step)
